"""What the fused kernels (:mod:`learned_optim.kernel` on CPUs, :mod:`learned_optim.triton_kernel` on GPUs) share:
the codes they know the encodings and outputs by, the matmul precisions they take, the arguments they take, and a
cache of each network's weights prepared for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

PREPROCESSING_CODES = {"none": 0, "log_sign": 1, "adam": 2}
OUTPUT_CODES = {"linear": 0, "tanh": 1}
PRECISIONS = ("tf32x3", "ieee", "tf32", "bf16")
"""``precision=`` of the fused kernels: all four on GPUs; on CPUs ``"bf16"`` where the CPU has AVX-512-BF16, the
others float32."""
DEFAULT_PRECISION = "tf32x3"
PREPARED_CACHE_SIZE = 16
"""Weights objects kept prepared per kernel (the oldest is dropped first)."""


try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a build of torch without torch.distributed
    DTensor = None

PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def local(tensor: Tensor) -> Tensor:
    """A ``DTensor``'s local shard (the rule is coordinatewise, so a shard steps on its own, with no communication),
    any other tensor itself."""
    return tensor.to_local() if DTensor is not None and isinstance(tensor, DTensor) else tensor


def sharded_like(state: Tensor, param: Tensor, lead: int) -> Tensor:
    """A state tensor of ``param``'s local shard, laid out ``[*lead, local numel, *trailing]`` (``lead`` leading
    dimensions), as a ``DTensor`` laid out like a ``DTensor`` parameter: ``[*lead, *param.shape, *trailing]``, sharded
    on the parameter's dimensions (how ``torch.distributed.checkpoint`` saves it and reshards it for another number of
    processes); for any other parameter, ``state`` itself (a view, no copy)."""
    if DTensor is None or not isinstance(param, DTensor):
        return state
    shape = (*state.shape[:lead], *param.shape, *state.shape[lead + 1:])
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    view = state.view(*state.shape[:lead], *param.to_local().shape, *state.shape[lead + 1:])
    return DTensor.from_local(view, param.device_mesh, _state_placements(param, lead), run_check=False,
                              shape=torch.Size(shape), stride=tuple(strides))


def local_state(value: Tensor, param: Tensor, lead: int) -> Tensor:
    """The inverse of :func:`sharded_like`: a saved state tensor as ``param``'s local state ``[*lead, local numel,
    *trailing]``; a ``DTensor`` laid out for another number of processes is redistributed first, and gathered whole
    for a parameter that is not a ``DTensor``. Anything else is returned as it is."""
    if DTensor is None or not isinstance(value, DTensor):
        return value
    if isinstance(param, DTensor):
        placements = _state_placements(param, lead)
        if tuple(value.placements) != tuple(placements) or value.device_mesh != param.device_mesh:
            value = value.redistribute(param.device_mesh, placements)
        value = value.to_local()
    else:
        value = value.full_tensor()
    return value.reshape(*value.shape[:lead], -1, *value.shape[lead + param.dim():])


def _state_placements(param: Tensor, lead: int) -> list:
    from torch.distributed.tensor import Shard

    return [Shard(p.dim + lead) if isinstance(p, Shard) else p for p in param.placements]


def fusable(weights: Any, device: str, grad: Tensor, state: Tensor, out: Tensor | None,
            moments: Tensor | None) -> bool:
    """Whether a kernel for ``device`` (``"cpu"`` or ``"cuda"``) takes these arguments: there, float32 weights,
    output and moments, a contiguous float32 or bfloat16 state, an encoding and an output it knows, and plain tensors
    only (a tensor subclass such as a ``DTensor`` has no memory a kernel could address: never handed one)."""
    return (all(t is None or type(t) in PLAIN_TENSORS for t in (grad, state, out, moments))
            and weights.head_weight.device.type == device and grad.device.type == device
            and weights.head_weight.dtype == torch.float32
            and weights.preprocessing in PREPROCESSING_CODES and weights.output in OUTPUT_CODES
            and state.device.type == device and state.dtype in (torch.float32, torch.bfloat16)
            and state.is_contiguous()
            and all(t is None or (t.device.type == device and t.dtype == torch.float32 and t.is_contiguous())
                    for t in (out, moments)))


class PreparedWeights:
    """The weights each network (a :class:`~learned_optim.functional.FusedWeights`, which the optimizer keeps one
    of per network and device) arranged for a kernel by ``prepare``, computed once and keyed by identity; the
    weights stay referenced with their entry, so an identity is never reused while cached."""

    def __init__(self, prepare: Callable[[Any], Any], size: int = PREPARED_CACHE_SIZE) -> None:
        self.prepare, self.size = prepare, size
        self.entries: dict[int, tuple[Any, Any]] = {}

    def __call__(self, weights: Any) -> Any:
        key = id(weights)
        if key not in self.entries:
            if len(self.entries) >= self.size:
                del self.entries[next(iter(self.entries))]
            self.entries[key] = (weights, self.prepare(weights))
        return self.entries[key][1]
