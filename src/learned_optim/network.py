"""The coordinatewise LSTM of Andrychowicz et al. (2016) as a Hub-loadable ``nn.Module``."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin, constants
from safetensors.torch import save_model
from torch import Tensor, nn

from .functional import (OUTPUTS, PROGRESS_FEATURES, FusedWeights, chunked_update, fast_update_,
                         reference_update)
from .preprocessing import NOMINAL_ENCODINGS, PREPROCESSINGS

CONFIG_KEYS = ("hidden_size", "num_layers", "preprocessing", "p", "output_scale", "output", "nominal", "scale_rate",
               "progress")
"""The options of :class:`CoordinatewiseLSTM` that define a network, as ``config.json`` holds them."""
_LATER_KEYS = {"output": "linear", "nominal": 0.0, "scale_rate": 0.0, "progress": False}
"""Options added after the first checkpoints: written to ``config.json`` only when not at their default, so older
checkpoints keep their config and fingerprint."""


class CoordinatewiseLSTM(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="learned_optim",
    tags=["learned-optimizer", "learning-to-learn", "optimizer"],
    paper_url="https://arxiv.org/abs/1606.04474",
):
    r"""Stacked LSTM applied to every coordinate of every parameter independently.

    Coordinates are the batch dimension: ``forward(grad [N], state) -> (update [N], state)``.
    The update is :math:`g = s \cdot o(\operatorname{Linear}(h^{(L-1)}))` after ``num_layers`` LSTM
    cells fed with the preprocessed gradient, :math:`s` being ``output_scale`` and :math:`o` the ``output``
    nonlinearity.

    Args:
        hidden_size (int, optional): LSTM units per layer (default: 20).
        num_layers (int, optional): stacked LSTM layers (default: 2).
        preprocessing (str, optional): gradient encoding, ``"log_sign"`` (the paper's), ``"none"`` or
            ``"adam"`` (RNNprop's Adam-normalised gradient and momentum, with per-coordinate moments kept
            after the LSTM state; :func:`~learned_optim.preprocessing.adam_normalised`) or
            ``"adam_two_timescales"`` (those and the log ratio of the gradient's recent to long-term RMS;
            :func:`~learned_optim.preprocessing.adam_two_timescales`) (default: ``"log_sign"``).
        p (float, optional): the ``log_sign`` constant (default: 10.0).
        output_scale (float, optional): fixed factor on the network's output (default: 0.1).
        output (str, optional): the head's nonlinearity, ``"linear"`` (the paper's) or ``"tanh"`` (each step
            bounded by ``output_scale``, as in RNNprop) (default: ``"linear"``).
        nominal (float, optional): the rate :math:`\nu` of a nominal term added to the head's output,
            :math:`-\nu\, \hat m / \sqrt{\hat v}` (an Adam step with :math:`\beta_1 = \beta_2 = 0.95`, Harrison et al.,
            2022), so that the network learns a correction to a sound default; needs an Adam encoding
            (default: 0, none).
        scale_rate (float, optional): the rate :math:`\rho` of run-time step-scale control
            (:mod:`learned_optim.control`): the optimizer multiplies each group's updates by a scale it adapts
            from the alignment of successive gradients and updates, by at most :math:`\rho` in log per step
            (default: 0, none: the network's own scale).
        progress (bool, optional): progress awareness: the first layer also takes how far training has come,
            :func:`~learned_optim.functional.progress_features` of the step and the optimizer's ``total_steps``
            (default: False).

    Example:
        >>> net = CoordinatewiseLSTM()
        >>> grad = torch.randn(5)
        >>> update, state = net(grad, net.initial_state(5))
        >>> update.shape, len(state), state[0].shape
        (torch.Size([5]), 4, torch.Size([5, 20]))

    Saving and loading go through ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``
    (``config.json`` + ``model.safetensors`` + model card); loading is strict and safetensors-only.
    """

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        preprocessing: str = "log_sign",
        p: float = 10.0,
        output_scale: float = 0.1,
        output: str = "linear",
        nominal: float = 0.0,
        scale_rate: float = 0.0,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"Invalid preprocessing: {preprocessing!r}; choose one of {sorted(PREPROCESSINGS)}")
        if output not in OUTPUTS:
            raise ValueError(f"Invalid output: {output!r}; choose one of {sorted(OUTPUTS)}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"Invalid network size: hidden_size={hidden_size}, num_layers={num_layers}")
        if p <= 0:
            raise ValueError(f"Invalid log_sign constant p: {p}; it must be positive")
        if not (math.isfinite(nominal) and nominal >= 0):
            raise ValueError(f"Invalid nominal rate: {nominal}; it must be finite and >= 0 (0: no nominal term; a "
                             "negative rate would step uphill)")
        if nominal and preprocessing not in NOMINAL_ENCODINGS:
            raise ValueError(f"a nominal term (nominal={nominal}) needs an encoding whose second feature is Adam's "
                             f"m/sqrt(v), one of {list(NOMINAL_ENCODINGS)}; got preprocessing={preprocessing!r}")
        if not (math.isfinite(scale_rate) and 0 <= scale_rate <= 1):
            raise ValueError(f"Invalid scale_rate: {scale_rate}; it must be in [0, 1] (0: no step-scale control)")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.preprocessing = preprocessing
        self.p = float(p)
        self.output_scale = float(output_scale)
        self.output = output
        self.nominal = float(nominal)
        self.scale_rate = float(scale_rate)
        self.progress = bool(progress)
        num_features = PREPROCESSINGS[preprocessing].features + PROGRESS_FEATURES * self.progress
        self.cells = nn.ModuleList(
            nn.LSTMCell(num_features if layer == 0 else hidden_size, hidden_size) for layer in range(num_layers)
        )
        self.head = nn.Linear(hidden_size, 1)
        # nn.LSTMCell's gate order (i, f, g, o) -> (i, f, o, g), with g doubled: tanh(z) = 2 sigmoid(2z) - 1
        h = hidden_size
        gate_order = torch.cat([torch.arange(2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
        self.register_buffer("gate_order", gate_order, persistent=False)
        self.register_buffer("gate_scale", torch.cat([torch.ones(3 * h), torch.full((h,), 2.0)]), persistent=False)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as written to ``config.json`` (later options only when not at their default)."""
        return {key: getattr(self, key) for key in CONFIG_KEYS
                if key not in _LATER_KEYS or getattr(self, key) != _LATER_KEYS[key]}

    def with_step_scale(self, scale: float) -> "CoordinatewiseLSTM":
        r"""A copy whose step is ``scale`` times this one's: ``output_scale`` and the ``nominal`` rate multiplied by
        ``scale`` (the update :math:`s\,o(W h) - \nu\, \hat m / \sqrt{\hat v}` is linear in both), the same
        weights: ``LearnedOptimizer(..., lr=scale)`` as a network of its own, to fine-tune or publish."""
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Invalid step scale: {scale}; it must be finite and > 0")
        return self._changed(output_scale=round(self.output_scale * scale, 12), nominal=round(self.nominal * scale, 12))

    def with_scale_rate(self, rate: float) -> "CoordinatewiseLSTM":
        """A copy with step-scale control at ``rate`` (:mod:`learned_optim.control`; 0: none), the same weights: control
        bolted on a network meta-trained without it, or taken off one trained with it."""
        return self._changed(scale_rate=rate)

    def with_nominal(self, rate: float) -> "CoordinatewiseLSTM":
        r"""A copy whose update has the nominal term :math:`-\nu\, \hat m / \sqrt{\hat v}` at ``rate`` (0: none), the
        same weights: a sound default added to a network meta-trained without it (or a fine-tune's start,
        ``train --init ... --nominal``)."""
        return self._changed(nominal=rate)

    def _changed(self, **options: Any) -> "CoordinatewiseLSTM":
        """A copy with these constructor options changed (none that shapes a weight) and the same weights."""
        changed = type(self)(**{**self.config, **options}).to(self.head.weight.device)
        changed.load_state_dict(self.state_dict())
        return changed

    def initial_state(
        self, num_coordinates: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """Zero LSTM state ``[2 * num_layers, num_coordinates, hidden_size]`` (``h_0, c_0, h_1, ...``)."""
        return torch.zeros(2 * self.num_layers, num_coordinates, self.hidden_size, dtype=dtype, device=device)

    @property
    def num_moments(self) -> int:
        """Rows of per-coordinate moments the encoding keeps (:meth:`initial_moments`; 0 for a stateless one)."""
        return PREPROCESSINGS[self.preprocessing].moments

    def initial_moments(self, num_coordinates: int, device: torch.device | str | None = None) -> Tensor | None:
        """Zero moments ``[num_moments, num_coordinates]`` (float32) of a stateful encoding, else None.
        They follow the LSTM entries in the state :meth:`forward` takes."""
        if not self.num_moments:
            return None
        return torch.zeros(self.num_moments, num_coordinates, device=device)

    def fused_weights(self) -> FusedWeights:
        """The weights as :class:`FusedWeights`: one ``[in + H, 4H]`` matrix per layer (differentiable), the progress
        inputs' rows of the first apart."""
        layers = [
            (
                (torch.cat((cell.weight_ih, cell.weight_hh), dim=1)[self.gate_order] * self.gate_scale[:, None]).t(),
                (cell.bias_ih + cell.bias_hh)[self.gate_order] * self.gate_scale,
            )
            for cell in self.cells
        ]
        progress_weight = None
        if self.progress:
            (weight, bias), features = layers[0], PREPROCESSINGS[self.preprocessing].features
            progress_weight = weight[features:features + PROGRESS_FEATURES]
            layers[0] = (torch.cat((weight[:features], weight[features + PROGRESS_FEATURES:])), bias)
        return FusedWeights(layers, self.head.weight.t(), self.head.bias, self.output_scale, self.preprocessing, self.p,
                            self.output, self.nominal, progress_weight)

    def with_progress(self) -> "CoordinatewiseLSTM":
        """A copy with progress inputs whose weights are zero: the same rule at every step and horizon, to fine-tune
        into one that uses them."""
        if self.progress:
            return copy.deepcopy(self)
        extended = type(self)(**{**self.config, "progress": True}).to(self.head.weight.device)
        state = self.state_dict()
        weight = state["cells.0.weight_ih"]
        state["cells.0.weight_ih"] = torch.cat((weight, weight.new_zeros(weight.shape[0], PROGRESS_FEATURES)), dim=1)
        extended.load_state_dict(state)
        return extended

    def forward(self, grad: Tensor, state: Sequence[Tensor], step: int = 0,
                total_steps: int | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Update for the flat gradient ``grad [N]`` at step ``step`` of ``total_steps`` (None: not known; only a
        network with ``progress`` reads them); returns ``(update [N], new_state)``, differentiable.

        ``state`` is ``(h_0, c_0, h_1, ...)``, each ``[N, hidden_size]``, or their stack from
        :meth:`initial_state`, followed by the moments of :meth:`initial_moments` for a stateful encoding;
        the new state is a tuple. A ``grad`` that requires grad (second-order
        meta-training) goes through autograd's :func:`~learned_optim.functional.reference_update`, any
        other through the chunked hand-written backward of :func:`~learned_optim.functional.chunked_update`.
        """
        update = reference_update if grad.requires_grad else chunked_update
        return update(self.fused_weights().at_progress(step, total_steps), grad, state)

    @torch.no_grad()
    def inference_step(self) -> Callable[..., Tensor]:
        """The no-grad rule with the network's current weights, fused once: ``step(grad [N], state, *, moments=None,
        step=0, total_steps=None) -> update``, the stacked ``state [2L, N, H]`` (from :meth:`initial_state`) updated in
        place, ``moments`` those of :meth:`initial_moments` for a stateful encoding, ``step`` and ``total_steps`` the
        progress (as :meth:`forward` takes them). It is :func:`~learned_optim.functional.fast_update_`, what
        :class:`LearnedOptimizer` runs."""
        weights = self.fused_weights()

        def run(grad: Tensor, state: Tensor, *, moments: Tensor | None = None, step: int = 0,
                total_steps: int | None = None) -> Tensor:
            return fast_update_(weights.at_progress(step, total_steps), grad, state, moments=moments)

        return run

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.config.items())

    def fingerprint(self) -> str:
        """SHA-256 of the config and weights: names this exact network (checkpoint integrity, optimizer state)."""
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save_weights(self, folder: str | os.PathLike) -> None:
        """``config.json`` and ``model.safetensors`` (with the fingerprint) in ``folder``: a checkpoint folder without
        the model card that ``save_pretrained`` adds (run folders' ``best/``)."""
        folder = Path(folder)
        save_model(self, os.fspath(folder / constants.SAFETENSORS_SINGLE_FILE),
                   metadata={"format": "pt", "fingerprint": self.fingerprint()})
        (folder / constants.CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save_weights(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs) -> "CoordinatewiseLSTM":
        """The Hub mixin's ``from_pretrained``, with an unreadable ``config.json`` a :class:`CheckpointError`."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            from .pretrained import CheckpointError

            config = Path(pretrained_model_name_or_path) / constants.CONFIG_NAME
            raise CheckpointError(f"{config} is not valid JSON ({error}); "
                                  "save or download the checkpoint again") from error

    @classmethod
    def _from_pretrained(cls, *, model_id: str, config: dict | None = None, map_location: str = "cpu", **kwargs):
        """Strict, safetensors-only loading from a local folder: :func:`learned_optim.pretrained.read_folder`."""
        from .pretrained import read_folder

        return read_folder(cls, model_id, config, map_location)
