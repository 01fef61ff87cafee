r"""The learned update rule on a flat batch of coordinates.

For a flat gradient :math:`\nabla \in \mathbb{R}^N` and per-coordinate LSTM state, one step is

.. math::
    x^{(0)} = \operatorname{pre}(\nabla), \qquad
    (h^{(l)}_{t+1}, c^{(l)}_{t+1}) = \operatorname{LSTM}_l(x^{(l)}, h^{(l)}_t, c^{(l)}_t), \quad
    x^{(l+1)} = h^{(l)}_{t+1}, \qquad
    g_t = s \cdot o(w^\top h^{(L-1)}_{t+1} + b),

with :math:`s` the output scale and :math:`o` the output nonlinearity (:data:`OUTPUTS`), except that
:math:`g_t = 0` where :math:`\nabla = 0` (a coordinate with a zero gradient does not move: frozen weights, unused
embedding rows), and the caller applies :math:`\theta_{t+1} = \theta_t + g_t`. A stateful encoding (``"adam"``)
also updates per-coordinate moments. Coordinates are the batch dimension, so every coordinate is updated
independently.

There is one definition of the step (:func:`_step`) and three ways to run it:

* :func:`reference_update` runs it on all coordinates at once, out of place and differentiable
  with autograd (also to second order).
* :func:`chunked_update` runs the same math chunk by chunk with a hand-written backward (first order,
  the gradient input treated as a constant, as meta-training does), so forward and backward touch
  cache-sized blocks; meta-training uses it. Tested equal to the reference, values and gradients.
* :func:`fast_update_` runs it under ``torch.no_grad()``, writing the new state in place, with the fused
  CPU kernel of :mod:`learned_optim.kernel` where it applies and in fixed-size chunks otherwise, so
  transient memory stays bounded whatever the parameter size; the optimizer uses it.

State layout: ``h_0, c_0, h_1, c_1, ...``, each ``[N, hidden_size]``, as a tuple (meta-training) or
stacked in one ``[2 * num_layers, N, hidden_size]`` tensor (the optimizer's state). The state may be
stored in a lower precision (bfloat16) than the computation. A stateful encoding's moments ``[M, N]`` follow
the LSTM entries in a tuple state and are a separate ``moments`` argument of :func:`fast_update_`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from . import kernel, triton_kernel
from .fusion import DEFAULT_PRECISION, PRECISIONS
from .preprocessing import PREPROCESSINGS

DEFAULT_CHUNK_SIZE = 8192
"""Coordinates per chunk of the fast path: ~3 MB of work buffers, sized for a 2 MB L2 cache per core."""


class FusedWeights(NamedTuple):
    r"""The network's weights arranged for one matmul and one sigmoid per LSTM layer.

    ``layers[l] = (weight [in_l + H, 4H], bias [4H])`` with gate columns ordered
    ``(input, forget, output, cell)``; the cell gate's columns are doubled, so that
    :math:`\tanh(z) = 2\sigma(2z) - 1` lets one sigmoid over all four gates do the work.
    """

    layers: list[tuple[Tensor, Tensor]]
    head_weight: Tensor  # [H, 1]
    head_bias: Tensor  # [1]
    output_scale: float
    preprocessing: str  # a key of PREPROCESSINGS
    p: float
    output: str = "linear"  # a key of OUTPUTS
    nominal: float = 0.0  # the nominal term's rate (0: none)
    progress_weight: Tensor | None = None  # [PROGRESS_FEATURES, 4H]: the progress inputs' rows of the first layer

    def at_progress(self, step: int = 0, total_steps: int | None = None) -> "FusedWeights":
        r"""The weights at step ``step`` of ``total_steps`` (None: not known): the progress inputs :math:`q`
        (:func:`progress_features`) are the same for every coordinate, so they enter as the first layer's bias
        :math:`b + W_q^\top q` (differentiable in both) and the kernels see a network without them. Weights without
        progress inputs are returned as they are."""
        if self.progress_weight is None:
            return self
        (weight, bias), *rest = self.layers
        features = torch.tensor(progress_features(step, total_steps), dtype=bias.dtype, device=bias.device)
        return self._replace(layers=[(weight, bias + features @ self.progress_weight), *rest], progress_weight=None)

    @property
    def stateful(self) -> bool:
        """Whether the encoding keeps per-coordinate moments (``[M, N]``, after the LSTM state)."""
        return PREPROCESSINGS[self.preprocessing].stateful

    @property
    def num_moments(self) -> int:
        """M, the rows of per-coordinate moments the encoding keeps (0: none)."""
        return PREPROCESSINGS[self.preprocessing].moments

    def preprocess(self, grad: Tensor, moments: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The gradient encoding, ``[N] -> [N, F]``, and the new moments (None for a stateless encoding)."""
        encoding = PREPROCESSINGS[self.preprocessing]
        if not encoding.stateful:
            return encoding.function(grad, self.p), None
        if moments is None:
            raise ValueError(f"the {self.preprocessing!r} encoding needs its moments [{encoding.moments}, N] "
                             "(CoordinatewiseLSTM.initial_moments) after the LSTM state")
        return encoding.function(grad, moments.to(grad.dtype))

    def head(self, h: Tensor) -> Tensor:
        r"""The update from the last layer's output: :math:`s \cdot o(w^\top h + b)`, ``[N, H] -> [N]``."""
        raw = torch.addmm(self.head_bias, h, self.head_weight).squeeze(1)
        return OUTPUTS[self.output](raw) * self.output_scale

    def nominal_step(self, features: Tensor) -> Tensor:
        r"""The nominal term :math:`-\nu\, \hat m / \sqrt{\hat v}` (the second feature of the Adam encodings), a
        descent step that the head's output is added to (Harrison et al., 2022), ``[N, F] -> [N]``."""
        return features[:, 1] * -self.nominal

    def plus_nominal(self, update: Tensor, features: Tensor) -> Tensor:
        """``update`` plus the nominal term, or ``update`` itself where the network has none."""
        return update + self.nominal_step(features) if self.nominal else update


PROGRESS_FEATURES = 2
"""Inputs of a network with progress awareness, after the gradient encoding (:func:`progress_features`)."""


def progress_features(step: int, total_steps: int | None) -> tuple[float, float]:
    r"""The progress inputs at step ``step`` (from 0): :math:`(1, \min(t / T, 1))` when training lasts
    :math:`T` = ``total_steps``, :math:`(0, 0)` when that is not known."""
    if total_steps is None:
        return 0.0, 0.0
    return 1.0, min(step / total_steps, 1.0)


OUTPUTS = {"linear": lambda raw: raw, "tanh": torch.tanh_}
r"""The output nonlinearity :math:`o` of the head, applied in place: none (the paper) or ``tanh``, bounding each
coordinate's step by the output scale (RNNprop)."""


def _split_state(weights: FusedWeights, state: Sequence[Tensor]) -> tuple[Sequence[Tensor], Tensor | None]:
    """``(h_0, c_0, ..., [moments])`` -> the LSTM entries and the moments (None for a stateless encoding)."""
    lstm = 2 * len(weights.layers)
    if len(state) != lstm + weights.stateful:
        raise ValueError(f"expected a state of {lstm} LSTM entries{' and the moments' if weights.stateful else ''}, "
                         f"got {len(state)} entries")
    return state[:lstm], (state[lstm] if weights.stateful else None)


def _lstm_layer(x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    r"""One standard LSTM cell, :math:`c' = f \odot c + i \odot g`, :math:`h' = o \odot \tanh c'`."""
    gates = torch.addmm(bias, torch.cat((x, h), dim=1), weight).sigmoid()
    i, f, o, g = gates.split(h.shape[1], dim=1)
    c_new = torch.addcmul(f * c, i, 2 * g - 1)
    return o * c_new.tanh(), c_new


def _step(weights: FusedWeights, grad: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The update rule on ``grad [N]`` with ``state = (h_0, c_0, h_1, c_1, ..., [moments])``, each ``[N, H]``."""
    state, moments = _split_state(weights, state)
    features, moments = weights.preprocess(grad, moments)
    x = features
    new_state: list[Tensor] = []
    for layer, (weight, bias) in enumerate(weights.layers):
        h, c = _lstm_layer(x, state[2 * layer], state[2 * layer + 1], weight, bias)
        new_state += [h, c]
        x = h
    if moments is not None:
        new_state.append(moments)
    return moves_only_with_gradient(weights.plus_nominal(weights.head(x), features), grad), tuple(new_state)


def moves_only_with_gradient(update: Tensor, grad: Tensor) -> Tensor:
    """``update`` with zeros where ``grad`` is exactly zero (differentiable in ``update``)."""
    return torch.where(grad == 0, 0.0, update)


def reference_update(
    weights: FusedWeights, grad: Tensor, state: Sequence[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Differentiable update of all coordinates at once.

    Args:
        weights (FusedWeights): from :meth:`CoordinatewiseLSTM.fused_weights`, at a step of training with
            :meth:`FusedWeights.at_progress` (progress inputs not folded in: the horizon is not known).
        grad (Tensor): flat gradient ``[N]``.
        state (sequence of Tensor): ``(h_0, c_0, h_1, ...)``, each ``[N, hidden_size]``; a stacked
            ``[2 * num_layers, N, hidden_size]`` tensor works too.

    Returns:
        ``(update [N], new_state)``, the new state a tuple in the dtypes of ``state``.
    """
    compute_dtype, weights = weights.head_weight.dtype, weights.at_progress()
    update, new_state = _step(weights, grad.to(compute_dtype), [s.to(compute_dtype) for s in state])
    return update, tuple(new.to(old.dtype) for new, old in zip(new_state, state))


PATHS = ("cpu-kernel", "triton", "pytorch")
"""The implementations of :func:`fast_update_`: the fused CPU kernel, the fused Triton kernel, the PyTorch path."""


def execution_path(weights: FusedWeights, grad: Tensor, state: Tensor, out: Tensor | None = None,
                   moments: Tensor | None = None) -> str:
    """The implementation (one of :data:`PATHS`) that :func:`fast_update_` runs on these tensors."""
    if kernel.supports(weights, grad, state, out, moments):
        return "cpu-kernel"
    if triton_kernel.supports(weights, grad, state, out, moments):
        return "triton"
    return "pytorch"


@torch.no_grad()
def fast_update_(
    weights: FusedWeights,
    grad: Tensor,
    state: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    out: Tensor | None = None,
    lr: float = 1.0,
    decay: float = 1.0,
    maximize: bool = False,
    moments: Tensor | None = None,
    precision: str = DEFAULT_PRECISION,
) -> Tensor:
    r"""No-grad update writing the new ``state`` in place, with the fused kernel where it applies.

    With float32 weights and a contiguous float32 or bfloat16 state, this runs a fused kernel tested equal to
    this function's PyTorch path: on CPU :func:`learned_optim.kernel.fused_update_` (one pass per tile of
    coordinates), on CUDA :func:`learned_optim.triton_kernel.fused_update_` (one program per block).
    Otherwise, chunk by chunk, the same rule as :func:`_step` computed in place in cache-sized work buffers:
    per chunk and layer, two ``addmm`` into one gate buffer, one in-place sigmoid, and the cell update written
    straight into the stored state (through float32 buffers when the state is stored in another dtype). With
    ``out``, each chunk's update goes straight into it and nothing of size N is allocated, so transient memory
    is that of one chunk whatever the parameter size.

    Args:
        weights (FusedWeights): from :meth:`CoordinatewiseLSTM.fused_weights`, at a step of training with
            :meth:`FusedWeights.at_progress` (progress inputs not folded in: the horizon is not known).
        grad (Tensor): flat gradient ``[N]``, any floating dtype.
        state (Tensor): ``[2 * num_layers, N, hidden_size]``; updated in place.
        chunk_size (int, optional): coordinates per chunk of the PyTorch path (default: 8192).
        out (Tensor, optional): flat parameter ``[N]``, updated in place as
            :math:`\theta \leftarrow \text{decay} \cdot \theta + \text{lr} \cdot g` (default: None,
            return the update instead).
        lr (float, optional): the update's multiplier into ``out`` (default: 1.0).
        decay (float, optional): ``out``'s multiplier, ``1 - lr * weight_decay`` (default: 1.0).
        maximize (bool, optional): feed the network :math:`-\nabla` (default: False).
        moments (Tensor, optional): a stateful encoding's moments ``[M, N]``; updated in place (default: None).
        precision (str, optional): the fused kernels' matmuls: on GPUs ``"tf32x3"`` (float32 accuracy), ``"ieee"``,
            ``"tf32"`` or ``"bf16"`` (:mod:`learned_optim.triton_kernel`); on CPUs ``"bf16"`` where the CPU has
            AVX-512-BF16 (:func:`learned_optim.kernel.bf16_dot`), otherwise the weights' dtype (default: ``"tf32x3"``).

    Returns:
        ``out``, or the update ``[N]`` in the weights' dtype.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Invalid precision: {precision!r}; choose one of {PRECISIONS}")
    weights = weights.at_progress()
    if weights.stateful and (moments is None or moments.shape != (weights.num_moments, grad.shape[0])):
        raise ValueError(f"the {weights.preprocessing!r} encoding needs moments of shape "
                         f"({weights.num_moments}, {grad.shape[0]}), got "
                         f"{None if moments is None else tuple(moments.shape)}: "
                         "pass CoordinatewiseLSTM.initial_moments()")
    fused = {"cpu-kernel": kernel.fused_update_, "triton": triton_kernel.fused_update_}.get(
        execution_path(weights, grad, state, out, moments))
    if fused is not None:
        return fused(weights, grad, state, out=out, lr=lr, decay=decay, maximize=maximize, moments=moments,
                     precision=precision)
    dtype, device = weights.head_weight.dtype, grad.device
    total, hidden = grad.shape[0], state.shape[-1]
    chunk = max(1, min(chunk_size, total))
    gates_buffer = torch.empty(chunk, 4 * hidden, dtype=dtype, device=device)
    tanh_buffer = torch.empty(chunk, hidden, dtype=dtype, device=device)
    state_buffer = (torch.empty(state.shape[0], chunk, hidden, dtype=dtype, device=device)
                    if state.dtype != dtype else None)
    update = torch.empty(total if out is None else chunk, dtype=dtype, device=device)
    for start in range(0, total, chunk):
        rows = slice(start, start + chunk)
        n = min(chunk, total - start)
        chunk_grad = grad[rows].to(dtype)
        x, new_moments = weights.preprocess(-chunk_grad if maximize else chunk_grad,
                                            None if moments is None else moments[:, rows])
        if new_moments is not None:
            moments[:, rows] = new_moments
        features = x
        gates, tanh_c = gates_buffer[:n], tanh_buffer[:n]
        for layer, (weight, bias) in enumerate(weights.layers):
            stored_h, stored_c = state[2 * layer, rows], state[2 * layer + 1, rows]
            if state_buffer is None:
                h, c = stored_h, stored_c
            else:
                h = state_buffer[2 * layer, :n].copy_(stored_h)
                c = state_buffer[2 * layer + 1, :n].copy_(stored_c)
            inputs = x.shape[1]
            torch.addmm(bias, x, weight[:inputs], out=gates)
            gates.addmm_(h, weight[inputs:]).sigmoid_()
            i, f, o, g = gates.split(hidden, dim=1)
            c.mul_(f).addcmul_(i, g, value=2).sub_(i)  # f c + i (2 g - 1)
            torch.mul(o, torch.tanh(c, out=tanh_c), out=h)
            if state_buffer is not None:
                stored_h.copy_(h)
                stored_c.copy_(c)
            x = h
        chunk_update = update[rows] if out is None else update[:n]
        torch.addmm(weights.head_bias, x, weights.head_weight, out=chunk_update.unsqueeze(1))
        OUTPUTS[weights.output](chunk_update).mul_(weights.output_scale)
        if weights.nominal:
            chunk_update.add_(weights.nominal_step(features))
        chunk_update.copy_(moves_only_with_gradient(chunk_update, chunk_grad))
        if out is not None:
            if decay != 1:
                out[rows].mul_(decay)
            out[rows].add_(chunk_update, alpha=lr)
    return update if out is None else out


class _ChunkedStep(torch.autograd.Function):
    r"""The step with its backward written out, chunk by chunk (inputs: features, then per layer
    ``weight, bias``, then ``head_weight, head_bias``, then the state ``h_0, c_0, h_1, ...``).

    Per layer, with :math:`z = [x, h] W + b`, :math:`s = \sigma(z)` split into :math:`(i, f, o, s_g)`,
    :math:`g = 2 s_g - 1`, :math:`c' = f c + i g`, :math:`h' = o \tanh c'`, the backward is
    :math:`\bar c = \bar c' + \bar h' o (1 - \tanh^2 c')`,
    :math:`\bar z = (\bar c g,\ \bar c c,\ \bar h' \tanh c',\ 2 \bar c i) \odot s (1 - s)`,
    :math:`\bar c_{prev} = \bar c f`, :math:`[\bar x, \bar h] = \bar z W^\top`,
    :math:`\bar W = [x, h]^\top \bar z`, :math:`\bar b = \sum \bar z`.
    The head :math:`u = s\, o(r)`, :math:`r = w^\top h + b`, with :math:`o = \tanh` when ``bounded`` (else the
    identity): :math:`\bar r = s\, \bar u\, (1 - o(r)^2)`.
    Saved per coordinate: the gates and :math:`\tanh c'` of each layer (the inputs and outputs are kept anyway),
    and :math:`\tanh r` when bounded.
    """

    @staticmethod
    def forward(ctx, chunk: int, output_scale: float, bounded: bool, num_layers: int, features: Tensor,
                *tensors: Tensor):
        layers = [tensors[2 * l: 2 * l + 2] for l in range(num_layers)]
        head_weight, head_bias = tensors[2 * num_layers: 2 * num_layers + 2]
        state = tensors[2 * num_layers + 2:]
        total, hidden = features.shape[0], state[0].shape[1]
        gates = [features.new_empty(total, 4 * hidden) for _ in layers]
        tanh_c = [features.new_empty(total, hidden) for _ in layers]
        new_h = [features.new_empty(total, hidden) for _ in layers]
        new_c = [features.new_empty(total, hidden) for _ in layers]
        update = features.new_empty(total)
        for start in range(0, total, chunk):
            rows = slice(start, start + chunk)
            x = features[rows]
            for l, (weight, bias) in enumerate(layers):
                inputs = x.shape[1]
                z = gates[l][rows]
                torch.addmm(bias, x, weight[:inputs], out=z)
                z.addmm_(state[2 * l][rows], weight[inputs:]).sigmoid_()
                i, f, o, g = z.split(hidden, dim=1)
                c = new_c[l][rows]
                torch.mul(f, state[2 * l + 1][rows], out=c).addcmul_(i, g, value=2).sub_(i)
                torch.mul(o, torch.tanh(c, out=tanh_c[l][rows]), out=new_h[l][rows])
                x = new_h[l][rows]
            torch.addmm(head_bias, x, head_weight, out=update[rows].unsqueeze(1))
        bounded_output = update.tanh_().clone() if bounded else None
        update.mul_(output_scale)
        ctx.chunk, ctx.output_scale, ctx.bounded, ctx.num_layers = chunk, output_scale, bounded, num_layers
        ctx.save_for_backward(features, *tensors, *gates, *tanh_c, *new_h, *([bounded_output] if bounded else []))
        outputs = [update]
        for h, c in zip(new_h, new_c):
            outputs += [h, c]
        return tuple(outputs)

    @staticmethod
    def backward(ctx, grad_update: Tensor, *grad_state: Tensor):
        L, chunk, scale = ctx.num_layers, ctx.chunk, ctx.output_scale
        saved = ctx.saved_tensors
        features, tensors = saved[0], saved[1: 1 + 2 * L + 2 + 2 * L]
        gates, tanh_c, new_h = (saved[1 + 4 * L + 2 + k * L: 1 + 4 * L + 2 + (k + 1) * L] for k in range(3))
        layers = [tensors[2 * l: 2 * l + 2] for l in range(L)]
        head_weight = tensors[2 * L]
        state = tensors[2 * L + 2:]
        total, hidden = features.shape[0], state[0].shape[1]
        grad_layers = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
        grad_head_weight, grad_head_bias = torch.zeros_like(head_weight), torch.zeros(1, dtype=head_weight.dtype,
                                                                                      device=head_weight.device)
        grad_prev = [torch.empty_like(s) for s in state]
        n = min(chunk, total)
        dz, dz_s = features.new_empty(n, 4 * hidden), features.new_empty(n, 4 * hidden)
        dc = features.new_empty(n, hidden)
        work = features.new_empty(n, hidden)
        for start in range(0, total, chunk):
            rows = slice(start, start + chunk)
            m = min(chunk, total - start)
            du = grad_update[rows].unsqueeze(1) * scale  # [m, 1]
            if ctx.bounded:
                du = du * (1 - saved[-1][rows].unsqueeze(1) ** 2)
            grad_head_weight.addmm_(new_h[L - 1][rows].t(), du)
            grad_head_bias += du.sum()
            dh = du @ head_weight.t()  # [m, H]
            for l in range(L - 1, -1, -1):
                weight = layers[l][0]
                dh = dh + grad_state[2 * l][rows]
                i, f, o, g = gates[l][rows].split(hidden, dim=1)
                t = tanh_c[l][rows]
                z = dz[:m]
                di, df, do, dg = z.split(hidden, dim=1)
                torch.mul(dh, t, out=do)
                c_bar = dc[:m]
                torch.mul(t, t, out=work[:m]).neg_().add_(1).mul_(o).mul_(dh)  # dh o (1 - tanh^2)
                torch.add(grad_state[2 * l + 1][rows], work[:m], out=c_bar)
                torch.mul(c_bar, g, out=di).mul_(2).sub_(c_bar)  # c_bar (2 s_g - 1)
                torch.mul(c_bar, state[2 * l + 1][rows], out=df)
                torch.mul(c_bar, i, out=dg).mul_(2)
                torch.mul(c_bar, f, out=grad_prev[2 * l + 1][rows])
                s = gates[l][rows]
                z.mul_(s).sub_(torch.mul(z, s, out=dz_s[:m]))  # z s (1 - s)
                x = features[rows] if l == 0 else new_h[l - 1][rows]
                inputs = x.shape[1]
                grad_weight, grad_bias = grad_layers[l]
                grad_weight[:inputs].addmm_(x.t(), z)
                grad_weight[inputs:].addmm_(state[2 * l][rows].t(), z)
                grad_bias += z.sum(0)
                torch.mm(z, weight[inputs:].t(), out=grad_prev[2 * l][rows])
                if l > 0:
                    dh = z @ weight[:inputs].t()
        grads = [None, None, None, None, None]
        for grad_weight, grad_bias in grad_layers:
            grads += [grad_weight, grad_bias]
        grads += [grad_head_weight, grad_head_bias.view_as(tensors[2 * L + 1])]
        return (*grads, *grad_prev)


def chunked_update(
    weights: FusedWeights, grad: Tensor, state: Sequence[Tensor], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Differentiable update (first order in ``grad``, which is treated as a constant), chunk by chunk.

    The same math and signature as :func:`reference_update`, with a hand-written backward that works on
    ``chunk_size`` coordinates at a time (:class:`_ChunkedStep`): faster for meta-training on large
    batches of coordinates. States in another dtype than the weights are cast, as the reference does.
    """
    compute_dtype, weights = weights.head_weight.dtype, weights.at_progress()
    lstm_state, moments = _split_state(weights, state)
    features, new_moments = weights.preprocess(grad.detach().to(compute_dtype), moments)
    tensors = [t for layer in weights.layers for t in layer] + [weights.head_weight, weights.head_bias]
    outputs = _ChunkedStep.apply(max(1, chunk_size), weights.output_scale, weights.output == "tanh",
                                 len(weights.layers), features, *tensors, *(s.to(compute_dtype) for s in lstm_state))
    new_state = tuple(new.to(old.dtype) for new, old in zip(outputs[1:], lstm_state))
    if new_moments is not None:
        new_state += (new_moments.to(moments.dtype),)
    return moves_only_with_gradient(weights.plus_nominal(outputs[0], features), grad), new_state
