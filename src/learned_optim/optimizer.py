"""``LearnedOptimizer``: a drop-in ``torch.optim.Optimizer`` driven by a frozen coordinatewise LSTM."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import pretrained as checkpoints
from . import kernel
from .control import INITIAL_STATE, alignment_terms, control_step
from .functional import DEFAULT_CHUNK_SIZE, FusedWeights, execution_path, fast_update_
from .fusion import DEFAULT_PRECISION, PRECISIONS, local, local_state, sharded_like
from .network import CoordinatewiseLSTM

STATE_KEY = "lstm_state"
MOMENTS_KEY = "moments"
PREVIOUS_KEY = "previous_update"
"""Per-parameter state: the LSTM state ``[2L, N, H]``, for a network with a stateful encoding its moments ``[M, N]``,
and for a network with step-scale control the network's last update ``[N]`` (float32)."""
STATE_LEAD = {STATE_KEY: 1, MOMENTS_KEY: 1, PREVIOUS_KEY: 0}
"""Each per-parameter state tensor's dimensions before its coordinates."""
STEPS_KEY = "steps_done"
"""The per-group count of steps taken, a group entry of a network with progress inputs."""
CONTROL_KEY = "scale_control"
"""The per-group state of step-scale control, a group entry: ``[log scale, m, v, count]``
(:mod:`learned_optim.control`)."""
OPTIONS = ("lr", "weight_decay", "maximize", "state_dtype")
"""The per-group options of the rule (torch may add its own keys to ``defaults``)."""
PARALLEL_THRESHOLD = 2**20
"""Steps over fewer CPU coordinates run on one thread (see ``benchmarks/step_contention.py``)."""


@contextlib.contextmanager
def _threads(count: int | None):
    """Run the block on ``count`` torch threads (None: leave torch's setting alone)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LearnedOptimizer(Optimizer):
    r"""Applies a frozen, pretrained coordinatewise LSTM to every coordinate of every parameter.

    For each parameter :math:`\theta` with gradient :math:`\nabla` (negated when ``maximize``):

    .. math::
        (g_t, h_{t+1}) = m(\nabla_t, h_t; \phi), \qquad
        \theta_{t+1} = (1 - \eta\lambda)\,\theta_t + \eta\, g_t

    where :math:`m` is the network (Andrychowicz et al., 2016), :math:`h` the per-coordinate LSTM
    state kept in ``self.state[p]["lstm_state"]`` (shape ``[2 * num_layers, p.numel(), hidden]``,
    80 floats per coordinate for the paper's network), :math:`\eta` the learning rate (a multiplier
    on the learned update, so LR schedulers work) and :math:`\lambda` decoupled weight decay. A network with
    step-scale control (``scale_rate > 0``, :mod:`learned_optim.control`) steps by :math:`\eta\, s_t\, g_t`
    instead, with a scale :math:`s_t` per parameter group adapted at every step from the cosine of the gradient
    and the group's previous update; its state is the group's ``"scale_control"`` entry (``[log s, m, v, count]``,
    so schedulers, state dicts and loggers see it) and each parameter's ``"previous_update"``.

    Args:
        params (iterable): parameters or dicts defining parameter groups (named parameters work too).
            A group may name its own network with a ``"pretrained"`` key (any value ``pretrained=``
            takes), as the paper's CIFAR experiment used one LSTM for convolutions and another for
            fully connected layers.
        pretrained (str, os.PathLike or CoordinatewiseLSTM, optional): a bundled checkpoint name,
            a local folder, a Hugging Face Hub repo id, or a network (copied and frozen); the network
            of every group that names none (default: ``"l2o-generalist"``; ``"l2l-mnist"`` is the paper's
            MNIST network).
        lr (float or Tensor, optional): multiplier on the learned update, a number or a 1-element tensor
            (default: 1.0).
        weight_decay (float, optional): decoupled weight decay :math:`\lambda` (default: 0).
        total_steps (int, optional): the steps training will take, as ``OneCycleLR`` takes them: a network with
            progress inputs (``progress`` in its config) is told the fraction done at each step (the group's
            ``"steps_done"`` over this), so it can anneal; without it, it steps as not knowing the horizon. Networks
            without progress inputs ignore it (default: None).
        maximize (bool, optional): maximize the objective instead of minimizing (default: False).
        state_dtype (torch.dtype, optional): dtype of the LSTM state, ``torch.float32`` or
            ``torch.bfloat16`` (half the memory) (default: ``torch.float32``).
        revision (str, optional): Hub revision (branch, tag or commit) of ``pretrained`` (default: None).
        skip_nonfinite (bool, optional): if a gradient holds ``nan``/``inf``, skip the whole step
            (counted in ``skipped_steps``) instead of raising (default: False).
        chunk_size (int, optional): coordinates processed at once; bounds transient memory
            (default: 8192).
        precision (str, optional): matmul operands of the fused kernels, with float32 accumulation and state. CUDA
            parameters (:mod:`learned_optim.triton_kernel`): ``"tf32x3"`` (float32 accuracy from three
            TensorFloat-32 products), ``"ieee"`` (float32 on the CUDA cores, slower), ``"tf32"`` or ``"bf16"``. CPU
            parameters (:mod:`learned_optim.kernel`): ``"bf16"`` uses AVX-512-BF16 dot products where the CPU has
            them, and every other case computes in float32 (default: ``"tf32x3"``).
        parallel_threshold (int, optional): a step over fewer CPU coordinates than this runs its PyTorch
            operations on one thread (many small operations on several threads stall when other processes busy the
            cores), a larger one on torch's threads; 0 always uses torch's threads. The fused CPU kernel
            (:mod:`learned_optim.kernel`) splits its coordinates over up to torch's thread count itself, at least
            4,096 per thread, on threads that never wait for one another (default: 2**20).

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = LearnedOptimizer(model.parameters())
        >>> opt.zero_grad(); model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()

    Reference:
        Andrychowicz et al., "Learning to learn by gradient descent by gradient descent",
        NeurIPS 2016, https://arxiv.org/abs/1606.04474
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        pretrained: str | os.PathLike | CoordinatewiseLSTM = checkpoints.DEFAULT_CHECKPOINT,
        *,
        lr: float = 1.0,
        weight_decay: float = 0.0,
        total_steps: int | None = None,
        maximize: bool = False,
        state_dtype: torch.dtype = torch.float32,
        revision: str | None = None,
        skip_nonfinite: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        parallel_threshold: int = PARALLEL_THRESHOLD,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        if isinstance(pretrained, (int, float)) and not isinstance(pretrained, bool):
            raise TypeError(
                f"LearnedOptimizer's second argument is the checkpoint (pretrained=), not the learning rate: "
                f"pass the learning rate by keyword, LearnedOptimizer(params, lr={pretrained!r})"
            )
        if chunk_size < 1:
            raise ValueError(f"Invalid chunk_size: {chunk_size}; it must be a positive integer")
        if precision not in PRECISIONS:
            raise ValueError(f"Invalid precision: {precision!r}; choose one of {PRECISIONS}")
        defaults = dict(lr=lr, weight_decay=weight_decay, maximize=maximize, state_dtype=state_dtype,
                        total_steps=total_steps)
        _check_options(defaults)
        self.network = _frozen_network(pretrained, revision)
        self.networks: list[CoordinatewiseLSTM] = []  # per param group
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0
        self.chunk_size = chunk_size
        self.parallel_threshold = parallel_threshold
        self.precision = precision
        self._weights_by_network: dict[tuple[int, torch.device], FusedWeights] = {}
        self.last_step_paths: dict[str, int] = {}
        """How many tensors the last step updated on each path of :data:`learned_optim.functional.PATHS`."""
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; its ``"pretrained"`` key, if any, names the group's own network (loaded now)."""
        pretrained = param_group.pop("pretrained", None) if isinstance(param_group, dict) else None
        network = self.network if pretrained is None else _frozen_network(pretrained)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_options(group)
            for p in group["params"]:
                if not p.is_floating_point():
                    raise ValueError(
                        f"LearnedOptimizer supports real floating-point parameters only, got dtype {p.dtype}; "
                        "optimize complex parameters as torch.view_as_real() pairs"
                    )
        except ValueError:
            self.param_groups.pop()
            raise
        _set_network_entries(group, network)
        self.networks.append(network)

    def _weights(self, network: CoordinatewiseLSTM, device: torch.device) -> FusedWeights:
        """A frozen network's fused weights on ``device``, computed once per network and device."""
        key = (id(network), device)
        if key not in self._weights_by_network:
            with torch.no_grad():
                self._weights_by_network[key] = copy.deepcopy(network).to(device).fused_weights()
        return self._weights_by_network[key]

    def _gradients(self) -> list[tuple[int, Tensor, Tensor]] | None:
        """``(group index, param, grad)`` for every parameter with a gradient, validated before any write.

        Returns None when a gradient is non-finite and ``skip_nonfinite`` is set.
        """
        located = [(g, i, p) for g, group in enumerate(self.param_groups)
                   for i, p in enumerate(group["params"]) if p.grad is not None]
        for g, i, p in located:
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"LearnedOptimizer does not support sparse gradients ({_describe(self.param_groups[g], g, i, p)}); "
                    "use dense gradients, e.g. nn.Embedding(sparse=False)"
                )
        grads = [p.grad for _, _, p in located]
        culprit = None if _sums_are_finite(grads) else next(
            (entry for entry in located if not entry[2].grad.isfinite().all()), None)  # None: finite, sum overflowed
        if culprit is not None:
            if self.skip_nonfinite:
                return None
            g, i, p = culprit
            raise FloatingPointError(
                f"non-finite gradient for {_describe(self.param_groups[g], g, i, p)}; "
                "no parameter or optimizer state was changed. Find the source of the nan/inf, clip or scale "
                "the gradients, or pass skip_nonfinite=True to skip such steps"
            )
        return [(g, p, p.grad) for g, _, p in located]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Performs a single optimization step.

        Args:
            closure (Callable, optional): reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._gradients()
        if work is None:
            self.skipped_steps += 1
            return loss
        work = [(g, p, local(grad)) for g, p, grad in work]  # a sharded parameter steps its own shard
        cpu_coordinates = sum(local(p).numel() for _, p, _ in work if p.device.type == "cpu")
        small, threads = 0 < cpu_coordinates < self.parallel_threshold, torch.get_num_threads()
        with _threads(1 if small else None):
            self._update(work, threads)
        return loss

    def _update(self, work: list[tuple[int, Tensor, Tensor]], kernel_threads: int) -> None:
        """The learned update of every ``(group index, param, grad)``, the state created on first use. The
        parameters the fused CPU kernel takes are updated in one kernel call per group, on up to ``kernel_threads``.
        In a group with step-scale control the network's update goes to the parameter's ``previous_update`` first,
        and then into the parameter times the group's new scale."""
        flats = []  # each parameter's (local shard's) flat contiguous view or copy
        for g, p, grad in work:
            state, network, shard = self.state[p], self.networks[g], local(p)
            if not state:
                state[STATE_KEY] = network.initial_state(shard.numel(), self.param_groups[g]["state_dtype"], p.device)
                moments = network.initial_moments(shard.numel(), p.device)
                if moments is not None:
                    state[MOMENTS_KEY] = moments
            if network.scale_rate and PREVIOUS_KEY not in state:
                state[PREVIOUS_KEY] = torch.zeros(shard.numel(), dtype=torch.float32, device=p.device)
            flats.append(shard.contiguous().view(-1))  # a non-contiguous parameter: a copy, written back at the end
        scales = self._control_scales(work)
        step_weights = {}  # (group index, device): the group's network at this step's progress, fused
        batches: dict[int, tuple[FusedWeights, list]] = {}  # group index: weights, [(grad, out, state)]
        self.last_step_paths = paths = {}
        for (g, p, grad), flat in zip(work, flats):
            group, state = self.param_groups[g], self.state[p]
            grad = grad.reshape(-1)
            if (g, p.device) not in step_weights:
                step_weights[g, p.device] = self._weights(self.networks[g], p.device).at_progress(
                    group.get(STEPS_KEY, 0), group["total_steps"])
            weights = step_weights[g, p.device]
            out = state[PREVIOUS_KEY] if g in scales else flat
            path = execution_path(weights, grad, state[STATE_KEY], out, state.get(MOMENTS_KEY))
            paths[path] = paths.get(path, 0) + 1
            if path == "cpu-kernel":
                batches.setdefault(g, (weights, []))[1].append((grad, out, state))
            else:
                fast_update_(weights, grad, state[STATE_KEY], self.chunk_size, out=out, moments=state.get(MOMENTS_KEY),
                             precision=self.precision, **_step_options(group, g in scales))
        for g, (weights, batch) in batches.items():
            grads, outs, states = zip(*batch)
            kernel.fused_update_many_(weights, grads, [state[STATE_KEY] for state in states], outs,
                                      [state.get(MOMENTS_KEY) for state in states], precision=self.precision,
                                      max_threads=kernel_threads,
                                      **_step_options(self.param_groups[g], g in scales))
        for g, scale in scales.items():  # each controlled group's parameters, with one foreach call per operation
            outs = [flat for (h, _, _), flat in zip(work, flats) if h == g]
            updates = [self.state[p][PREVIOUS_KEY] for h, p, _ in work if h == g]  # float32
            options = _step_options(self.param_groups[g])
            if options["decay"] != 1:
                torch._foreach_mul_(outs, options["decay"])
            torch._foreach_add_(outs, updates, alpha=options["lr"] * scale)  # a bfloat16 parameter: rounded once
        for (g, p, _), flat in zip(work, flats):
            if not local(p).is_contiguous():
                local(p).copy_(flat.view(local(p).shape))
        for g in {g for g, _, _ in work}:
            if STEPS_KEY in self.param_groups[g]:
                self.param_groups[g][STEPS_KEY] += 1

    def _control_scales(self, work: list[tuple[int, Tensor, Tensor]]) -> dict[int, float]:
        """Steps the controller of each group with step-scale control from its gradients and its parameters' previous
        updates (:mod:`learned_optim.control`); returns each such group's new scale."""
        controlled: dict[int, tuple[list[Tensor], list[Tensor], list[Tensor]]] = {}
        for g, p, grad in work:
            if self.networks[g].scale_rate:
                grads, previous, params = controlled.setdefault(g, ([], [], []))
                grads.append(grad.reshape(-1))
                previous.append(self.state[p][PREVIOUS_KEY])
                params.append(p)
        scales = {}
        for g, (grads, previous, params) in controlled.items():
            group = self.param_groups[g]
            terms = alignment_terms(grads, previous, params)
            if group["maximize"]:
                terms[0] = -terms[0]  # the network stepped along -grad
            state = control_step(torch.tensor(group[CONTROL_KEY], dtype=torch.float64), terms,
                                 self.networks[g].scale_rate)
            group[CONTROL_KEY] = state.tolist()
            scales[g] = math.exp(group[CONTROL_KEY][0])
        return scales

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict plus ``"network"`` and ``"group_networks"``: the config and fingerprint of
        the default network and of each group's, whose hidden states it holds (checked by :meth:`load_state_dict`)."""
        state = super().state_dict()
        params = [p for group in self.param_groups for p in group["params"]]  # in the order torch numbers them
        for index, entry in state["state"].items():  # a DTensor parameter's state as DTensors laid out like it
            state["state"][index] = {key: sharded_like(tensor, params[index], STATE_LEAD[key])
                                     for key, tensor in entry.items()}
        state["network"] = _describe_network(self.network)
        state["group_networks"] = [_describe_network(network) for network in self.networks]
        return state

    def load_state_dict(self, state_dict: dict[str, Any], *, allow_other_network: bool = False) -> None:
        """Loads optimizer state, keeping each hidden state's dtype (torch would cast it to the parameter's).

        Args:
            state_dict (dict): from :meth:`state_dict`.
            allow_other_network (bool, optional): load hidden states produced by another network (they
                mean something else to this one; default: False, an error).

        Raises:
            ValueError: the state dict does not come from a ``LearnedOptimizer`` with this network
                and these parameters; nothing is changed then.
        """
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        saved_networks = state_dict.get("group_networks") or [state_dict.get("network")] * len(saved_groups)
        for g, (saved_network, network) in enumerate(zip(saved_networks, self.networks)):
            fingerprint = network.fingerprint()[:16]
            if saved_network is not None and not allow_other_network and saved_network["fingerprint"] != fingerprint:
                raise ValueError(
                    f"this state dict holds LSTM states of network {saved_network['fingerprint']} "
                    f"(config {saved_network['config']}) for param group {g}, but this optimizer runs network "
                    f"{fingerprint} (config {network.config}) there: hidden states do not carry over between "
                    "networks. Build the optimizer with the checkpoints that produced them, or pass "
                    "allow_other_network=True if you mean it"
                )
        saved_to_param, network_of = {}, {}
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            missing = sorted(set(OPTIONS) - set(saved))
            if missing:
                raise ValueError(
                    f"loaded param group {g} lacks options {missing}: this state dict is not from a LearnedOptimizer"
                )
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded param group {g} has {len(saved['params'])} parameters, "
                    f"this optimizer's has {len(group['params'])}"
                )
            saved_to_param.update(zip(saved["params"], group["params"]))
            network_of.update((id(p), self.networks[g]) for p in group["params"])
        hidden = {}
        for key, entry in state_dict["state"].items():
            p = saved_to_param.get(key)
            if p is None:
                raise ValueError(f"loaded state has an entry for parameter id {key}, which no param group holds")
            network = network_of[id(p)]
            entry = {k: local_state(v, p, STATE_LEAD.get(k, 0)) for k, v in entry.items()}  # as sharded_like saved
            keys = {STATE_KEY, MOMENTS_KEY} if network.num_moments else {STATE_KEY}
            if not keys <= set(entry) <= keys | {PREVIOUS_KEY}:  # a previous update is dropped or restarted at 0
                raise ValueError(
                    f"loaded state for parameter {key} has keys {sorted(entry)}, expected {sorted(keys)}"
                    f"{f' and {PREVIOUS_KEY!r}' if network.scale_rate else ''}: "
                    "this state dict is not from a LearnedOptimizer"
                )
            numel = local(p).numel()
            if PREVIOUS_KEY in entry and tuple(entry[PREVIOUS_KEY].shape) != (numel,):
                raise ValueError(f"loaded previous update for parameter {key} has shape "
                                 f"{tuple(entry[PREVIOUS_KEY].shape)}, expected {(numel,)}: it was saved for "
                                 "another parameter")
            if not network.scale_rate:
                entry = {k: v for k, v in entry.items() if k != PREVIOUS_KEY}
            expected = (2 * network.num_layers, numel, network.hidden_size)
            if tuple(entry[STATE_KEY].shape) != expected:
                raise ValueError(
                    f"loaded LSTM state for parameter {key} has shape {tuple(entry[STATE_KEY].shape)}, expected "
                    f"{expected}: it was saved for another parameter or another network"
                )
            if MOMENTS_KEY in entry and tuple(entry[MOMENTS_KEY].shape) != (network.num_moments, numel):
                raise ValueError(f"loaded moments for parameter {key} have shape {tuple(entry[MOMENTS_KEY].shape)}, "
                                 f"expected {(network.num_moments, numel)}: they were saved for another parameter "
                                 "or another network")
            hidden[p] = entry
        groups = [{**copy.deepcopy({k: v for k, v in saved.items() if k != "params"}), "params": group["params"]}
                  for saved, group in zip(saved_groups, self.param_groups)]  # a tensor lr is not shared
        for group, current, network in zip(groups, self.param_groups, self.networks):
            if "param_names" in current and "param_names" not in group:
                group["param_names"] = current["param_names"]
            group.setdefault("total_steps", current["total_steps"])  # a state dict from before the option
            _set_network_entries(group, network, drop_others=True)
        state = defaultdict(dict)
        state.update((p, {key: tensor.to(device=p.device, copy=True) for key, tensor in entry.items()})
                     for p, entry in hidden.items())
        self.__setstate__({"state": state, "param_groups": groups})
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(network=self.network, networks=self.networks, skip_nonfinite=self.skip_nonfinite,
                     skipped_steps=self.skipped_steps, chunk_size=self.chunk_size,
                     parallel_threshold=self.parallel_threshold, precision=self.precision)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._weights_by_network = {}
        self.__dict__.setdefault("networks", [self.network] * len(self.param_groups))
        self.__dict__.setdefault("skip_nonfinite", False)
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("chunk_size", DEFAULT_CHUNK_SIZE)
        self.__dict__.setdefault("parallel_threshold", PARALLEL_THRESHOLD)
        self.__dict__.setdefault("precision", DEFAULT_PRECISION)
        self.__dict__.setdefault("last_step_paths", {})
        for group, network in zip(self.param_groups, self.networks):
            _set_network_entries(group, network)
            group.setdefault("total_steps", None)
            group.setdefault("maximize", False)
            group.setdefault("weight_decay", 0.0)
            group.setdefault("state_dtype", torch.float32)


def _frozen_network(pretrained: Any, revision: str | None = None) -> CoordinatewiseLSTM:
    """The network ``pretrained=`` names (a checkpoint name, folder or Hub id, or a network, copied), frozen."""
    if isinstance(pretrained, CoordinatewiseLSTM):
        network = copy.deepcopy(pretrained)
    elif isinstance(pretrained, (str, os.PathLike)):
        network = checkpoints.load(pretrained, revision=revision)
    else:
        raise TypeError(f"pretrained must be a checkpoint name, folder, Hub repo id or CoordinatewiseLSTM, "
                        f"got {type(pretrained).__name__}")
    return network.requires_grad_(False).eval()


def _set_network_entries(group: dict[str, Any], network: CoordinatewiseLSTM, drop_others: bool = False) -> None:
    """Give ``group`` the entries its network keeps there where it has none (the step-scale controller's state, the
    step count of progress inputs); with ``drop_others``, remove those another network kept."""
    for key, used, initial in ((CONTROL_KEY, network.scale_rate, list(INITIAL_STATE)),
                               (STEPS_KEY, network.progress, 0)):
        if used:
            group.setdefault(key, initial)
        elif drop_others:
            group.pop(key, None)


def _step_options(group: dict[str, Any], record: bool = False) -> dict[str, Any]:
    """A group's options as the update rule takes them: the update's multiplier, the parameter's (decoupled weight
    decay) and the gradient's sign; with ``record``, those that write the network's update itself (``out <- 0 * out
    + 1 * update``)."""
    lr = float(group["lr"])  # a 1-element tensor lr (as schedulers and torch.compile keep it) as a number
    if record:
        return dict(lr=1.0, decay=0.0, maximize=group["maximize"])
    return dict(lr=lr, decay=1 - lr * group["weight_decay"], maximize=group["maximize"])


def _describe_network(network: CoordinatewiseLSTM) -> dict[str, Any]:
    return {"config": network.config, "fingerprint": network.fingerprint()[:16]}


def _check_options(options: dict[str, Any]) -> None:
    if isinstance(options["lr"], Tensor) and options["lr"].numel() != 1:
        raise ValueError(f"Invalid learning rate: a tensor of shape {tuple(options['lr'].shape)}; lr must be a number "
                         "or a 1-element tensor")
    if not 0.0 <= options["lr"]:
        raise ValueError(f"Invalid learning rate: {options['lr']}")
    total_steps = options.get("total_steps")
    if total_steps is not None and not (isinstance(total_steps, int) and not isinstance(total_steps, bool)
                                        and total_steps > 0):
        raise ValueError(f"Invalid total_steps: {total_steps!r}; it must be a positive integer, or None when the "
                         "length of training is not known")
    if not 0.0 <= options["weight_decay"]:
        raise ValueError(f"Invalid weight_decay value: {options['weight_decay']}")
    if options["state_dtype"] not in (torch.float32, torch.bfloat16, torch.float64):
        raise ValueError(
            f"Invalid state_dtype: {options['state_dtype']}; use torch.float32, torch.bfloat16 or torch.float64"
        )


def _sums_are_finite(grads: list[Tensor]) -> bool:
    """Whether each device's sum of the gradients' float32 sums is finite: nan/inf anywhere make it non-finite, and so,
    rarely, does an overflow of finite values (then the caller's exact check finds no culprit). One reduction per
    tensor and one sync per device, no N-sized temporary: about a third of the cost of a foreach inf-norm."""
    sums: dict[torch.device, list[Tensor]] = {}
    for grad in grads:
        sums.setdefault(grad.device, []).append(grad.sum(dtype=torch.float32))
    return all(bool(torch.stack(device_sums).sum().isfinite()) for device_sums in sums.values())


def _describe(group: dict[str, Any], g: int, i: int, p: Tensor) -> str:
    names = group.get("param_names")
    name = f"'{names[i]}' " if names else ""
    return f"parameter {name}(param_groups[{g}]['params'][{i}], shape {tuple(p.shape)}, dtype {p.dtype})"
