"""The fused GPU step: one Triton program per block of coordinates, for CUDA parameters.

Each program loads its block's gradient, runs the encoding, every LSTM layer, the head and the parameter
update with the LSTM state in registers, and writes the state once: per coordinate ~``L·4H·(in + H)``
multiply-adds on the tensor cores and ``2 × 2L·H`` state values read and written plus 12 bytes of gradient and
parameter (652 bytes with a float32 state; the moments of ``"adam"`` add 24), where the
eager path makes ~10 passes over every chunk. It is the same rule as the CPU kernel
(:mod:`learned_optim.kernel`) and the PyTorch path (:func:`learned_optim.functional.fast_update_`), tested
equal to the latter through Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) and on a GPU.

The network is packed once per weights object: hidden units padded to a power of two ``HP`` ≥ 16 (zero
weights, so padded units stay exactly zero), each layer's ``[in + H, 4H]`` matrix as ``[2·HP, 4, HP]``
(inputs then recurrent rows; per gate ``(input, forget, output, cell)``).

Precision of the matmuls (``precision=``; float32 accumulation, state and update whatever it is):
``"tf32x3"`` (default) gets float32 accuracy from three TensorFloat-32 tensor-core products (the reference's
values to ~1e-6); ``"ieee"`` multiplies in float32 on the CUDA cores, as the reference does, but ~40× slower on
an H200; ``"tf32"`` and ``"bf16"`` feed the tensor cores single TensorFloat-32 or bfloat16 operands. Their
speed and their effect on training are measured by ``benchmarks/gpu_step.py``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

from .fusion import DEFAULT_PRECISION, OUTPUT_CODES, PRECISIONS, PREPROCESSING_CODES, PreparedWeights, fusable
from .preprocessing import ADAM_EPSILON, MOMENT_DECAY

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the CUDA path falls back to PyTorch
    triton = tl = None

BLOCK = 64
"""Coordinates per program."""
ENV_VAR = "LEARNED_OPTIM_TRITON"
"""``LEARNED_OPTIM_TRITON=0`` turns the GPU kernel off (CUDA parameters then take the PyTorch path)."""


def available() -> bool:
    """Whether Triton is installed and not turned off."""
    return triton is not None and os.environ.get(ENV_VAR, "1") != "0"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def supports(weights: Any, grad: Tensor, state: Tensor, out: Tensor | None, moments: Tensor | None = None) -> bool:
    """Whether :func:`fused_update_` takes these arguments: :func:`~learned_optim.fusion.fusable` on CUDA (on the
    CPU under ``TRITON_INTERPRET=1``)."""
    return available() and fusable(weights, "cpu" if _interpreting() else "cuda", grad, state, out, moments)


def _lstm_step(grad_ptr, grad_sign, state_ptr, moments_ptr, out_ptr, weight_ptr, bias_ptr, head_ptr, head_bias,
               output_scale, nominal, p, beta, eps, lr, decay, total,
               H: tl.constexpr, HP: tl.constexpr, L: tl.constexpr, PREPROCESSING: tl.constexpr,
               OUTPUT: tl.constexpr, ACCUMULATE: tl.constexpr, PRECISION: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """One block of ``BLOCK_N`` coordinates: encoding, ``L`` LSTM layers (``H`` units padded to ``HP``), head,
    update; the gate order and the doubled cell gate as :class:`~learned_optim.functional.FusedWeights`'."""
    total = total.to(tl.int64)  # offsets past 2**31 elements: a 100M-coordinate state has 2L·H·N of them
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < total
    g = tl.load(grad_ptr + rows, mask=row_ok, other=0.0) * grad_sign
    if PREPROCESSING == 1:  # log_sign (the paper's appendix A)
        x0 = tl.log(tl.maximum(tl.abs(g), tl.exp(-p))) / p
        x1 = tl.minimum(tl.maximum(g * tl.exp(p), -1.0), 1.0)
    elif PREPROCESSING == 2:  # RNNprop's Adam-normalised gradient and momentum
        m = beta * tl.load(moments_ptr + rows, mask=row_ok, other=0.0) + (1.0 - beta) * g
        v = beta * tl.load(moments_ptr + total + rows, mask=row_ok, other=0.0) + (1.0 - beta) * g * g
        w = beta * tl.load(moments_ptr + 2 * total + rows, mask=row_ok, other=0.0) + (1.0 - beta)
        tl.store(moments_ptr + rows, m, mask=row_ok)
        tl.store(moments_ptr + total + rows, v, mask=row_ok)
        tl.store(moments_ptr + 2 * total + rows, w, mask=row_ok)
        inverse_rms = tl.div_rn(1.0, tl.sqrt_rn(tl.div_rn(v, w) + eps * eps))  # IEEE-rounded, as torch's
        x0 = g * inverse_rms
        x1 = tl.div_rn(m, w) * inverse_rms
    else:
        x0 = g
        x1 = tl.zeros_like(g)
    units = tl.arange(0, HP)
    unit_ok = units < H
    tile = tl.arange(0, HP)[:, None] * (4 * HP) + units[None, :]  # [HP, HP] offsets of one gate's block
    state_at = rows[:, None] * H + units[None, :]
    state_ok = row_ok[:, None] & unit_ok[None, :]
    x = tl.zeros((BLOCK_N, HP), dtype=tl.float32)
    for layer in tl.static_range(L):
        h_ptr = state_ptr + (2 * layer) * total * H
        c_ptr = h_ptr + total * H
        h = tl.load(h_ptr + state_at, mask=state_ok, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + state_at, mask=state_ok, other=0.0).to(tl.float32)
        if PRECISION == "bf16":
            h_operand, x_operand = h.to(tl.bfloat16), x.to(tl.bfloat16)
        else:
            h_operand, x_operand = h, x
        layer_weights = weight_ptr + layer * (2 * HP * 4 * HP)
        for gate in tl.static_range(4):  # input, forget, output, cell (doubled: tanh z = 2 sigmoid(2z) - 1)
            recurrent = tl.load(layer_weights + HP * 4 * HP + gate * HP + tile)
            if PRECISION == "bf16":
                z = tl.dot(h_operand, recurrent.to(tl.bfloat16), out_dtype=tl.float32)
            else:
                z = tl.dot(h_operand, recurrent, input_precision=PRECISION)
            z += tl.load(bias_ptr + (layer * 4 + gate) * HP + units)[None, :]
            if layer == 0:  # the encoded gradient: at most two features, weight rows 0 and 1
                z += x0[:, None] * tl.load(layer_weights + gate * HP + units)[None, :]
                z += x1[:, None] * tl.load(layer_weights + 4 * HP + gate * HP + units)[None, :]
            else:
                inputs = tl.load(layer_weights + gate * HP + tile)
                if PRECISION == "bf16":
                    z += tl.dot(x_operand, inputs.to(tl.bfloat16), out_dtype=tl.float32)
                else:
                    z += tl.dot(x_operand, inputs, input_precision=PRECISION)
            if gate == 0:
                input_gate = tl.sigmoid(z)
            elif gate == 1:
                forget_gate = tl.sigmoid(z)
            elif gate == 2:
                output_gate = tl.sigmoid(z)
            else:
                cell_gate = 2.0 * tl.sigmoid(z) - 1.0
        c = forget_gate * c + input_gate * cell_gate
        h = output_gate * (2.0 * tl.sigmoid(2.0 * c) - 1.0)
        tl.store(h_ptr + state_at, h.to(state_ptr.dtype.element_ty), mask=state_ok)
        tl.store(c_ptr + state_at, c.to(state_ptr.dtype.element_ty), mask=state_ok)
        x = h
    u = tl.sum(x * tl.load(head_ptr + units)[None, :], axis=1) + head_bias
    if OUTPUT == 1:  # tanh
        u = 2.0 * tl.sigmoid(2.0 * u) - 1.0
    u = u * output_scale
    if PREPROCESSING == 2:
        if nominal != 0.0:  # the nominal term -nominal m/sqrt(v)
            u = u + x1 * -nominal
    u = tl.where(g == 0.0, 0.0, u)  # a zero gradient moves nothing
    if ACCUMULATE:
        u = decay * tl.load(out_ptr + rows, mask=row_ok, other=0.0) + lr * u
    tl.store(out_ptr + rows, u, mask=row_ok)


@functools.cache
def _compiled(interpreting: bool) -> Any:
    """The Triton kernel, jitted on first use: Triton picks the interpreter at jit time."""
    return triton.jit(_lstm_step, do_not_specialize=["total"])


def _padded_size(hidden: int) -> int:
    return max(16, 1 << (hidden - 1).bit_length())


def _pack(weights: Any) -> tuple[Tensor, Tensor, Tensor, float]:
    """``(weights [L, 2·HP, 4, HP], biases [L, 4, HP], head [HP], head bias)``, zero-padded, on the weights'
    device."""
    hidden, layers = weights.head_weight.shape[0], weights.layers
    padded = _padded_size(hidden)
    device = weights.head_weight.device
    packed = torch.zeros(len(layers), 2 * padded, 4, padded, device=device)
    biases = torch.zeros(len(layers), 4, padded, device=device)
    for layer, (weight, bias) in enumerate(layers):
        inputs = weight.shape[0] - hidden
        gates = weight.detach().float().view(inputs + hidden, 4, hidden)
        packed[layer, :inputs, :, :hidden] = gates[:inputs]
        packed[layer, padded: padded + hidden, :, :hidden] = gates[inputs:]
        biases[layer, :, :hidden] = bias.detach().float().view(4, hidden)
    head = torch.zeros(padded, device=device)
    head[:hidden] = weights.head_weight.detach().float()[:, 0]
    return packed, biases, head, float(weights.head_bias)


_packed = PreparedWeights(_pack)


@torch.no_grad()
def fused_update_(weights: Any, grad: Tensor, state: Tensor, *, out: Tensor | None = None, lr: float = 1.0,
                  decay: float = 1.0, maximize: bool = False, moments: Tensor | None = None,
                  precision: str = DEFAULT_PRECISION) -> Tensor:
    """The no-grad step of :func:`~learned_optim.functional.fast_update_`, one program per block of coordinates.

    ``state [2L, N, H]`` (and ``moments [3, N]`` for the ``"adam"`` encoding) is updated in place; with ``out``
    (flat, float32) ``out <- decay * out + lr * update`` and ``out`` is returned, else the update. Call only
    where :func:`supports` holds.
    """
    total, hidden = grad.shape[0], state.shape[-1]
    accumulate = out is not None
    if out is None:
        out = torch.empty(total, dtype=torch.float32, device=grad.device)
    if total == 0:
        return out
    packed, biases, head, head_bias = _packed(weights)
    grad = grad.to(torch.float32).contiguous()
    _compiled(_interpreting())[(triton.cdiv(total, BLOCK),)](
        grad, -1.0 if maximize else 1.0, state, grad if moments is None else moments, out, packed, biases, head,
        head_bias, weights.output_scale, weights.nominal, weights.p, MOMENT_DECAY, ADAM_EPSILON, lr, decay, total,
        H=hidden, HP=_padded_size(hidden), L=len(weights.layers),
        PREPROCESSING=PREPROCESSING_CODES[weights.preprocessing],
        OUTPUT=OUTPUT_CODES[weights.output], ACCUMULATE=accumulate, PRECISION=precision,
        BLOCK_N=BLOCK)
    return out
