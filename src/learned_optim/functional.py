r"""The learned update rule on a flat batch of coordinates.

For a flat gradient :math:`\nabla \in \mathbb{R}^N` and per-coordinate LSTM state, one step is

.. math::
    x^{(0)} = \operatorname{pre}(\nabla), \qquad
    (h^{(l)}_{t+1}, c^{(l)}_{t+1}) = \operatorname{LSTM}_l(x^{(l)}, h^{(l)}_t, c^{(l)}_t), \quad
    x^{(l+1)} = h^{(l)}_{t+1}, \qquad
    g_t = s \cdot (w^\top h^{(L-1)}_{t+1} + b),

with :math:`s` the output scale, and the caller applies :math:`\theta_{t+1} = \theta_t + g_t`.
Coordinates are the batch dimension, so every coordinate is updated independently.

There is one definition of the step (:func:`_step`) and two ways to run it:

* :func:`reference_update` runs it on all coordinates at once, out of place and differentiable;
  meta-training uses it.
* :func:`fast_update_` runs it under ``torch.no_grad()`` in fixed-size chunks, writing the new state
  in place, so transient memory stays bounded whatever the parameter size; the optimizer uses it.

State layout: ``h_0, c_0, h_1, c_1, ...``, each ``[N, hidden_size]``, as a tuple (meta-training) or
stacked in one ``[2 * num_layers, N, hidden_size]`` tensor (the optimizer's state). The state may be
stored in a lower precision (bfloat16) than the computation.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

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
    preprocess: Callable[[Tensor], Tensor]


def _lstm_layer(x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    r"""One standard LSTM cell, :math:`c' = f \odot c + i \odot g`, :math:`h' = o \odot \tanh c'`."""
    gates = torch.addmm(bias, torch.cat((x, h), dim=1), weight).sigmoid()
    i, f, o, g = gates.split(h.shape[1], dim=1)
    c_new = torch.addcmul(f * c, i, 2 * g - 1)
    return o * c_new.tanh(), c_new


def _step(weights: FusedWeights, grad: Tensor, state: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The update rule on ``grad [N]`` with ``state = (h_0, c_0, h_1, c_1, ...)``, each ``[N, H]``."""
    x = weights.preprocess(grad)
    new_state: list[Tensor] = []
    for layer, (weight, bias) in enumerate(weights.layers):
        h, c = _lstm_layer(x, state[2 * layer], state[2 * layer + 1], weight, bias)
        new_state += [h, c]
        x = h
    update = torch.addmm(weights.head_bias, x, weights.head_weight).squeeze(1) * weights.output_scale
    return update, tuple(new_state)


def reference_update(
    weights: FusedWeights, grad: Tensor, state: Sequence[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Differentiable update of all coordinates at once.

    Args:
        weights (FusedWeights): from :meth:`CoordinatewiseLSTM.fused_weights`.
        grad (Tensor): flat gradient ``[N]``.
        state (sequence of Tensor): ``(h_0, c_0, h_1, ...)``, each ``[N, hidden_size]``; a stacked
            ``[2 * num_layers, N, hidden_size]`` tensor works too.

    Returns:
        ``(update [N], new_state)``, the new state a tuple in the dtypes of ``state``.
    """
    compute_dtype = weights.head_weight.dtype
    update, new_state = _step(weights, grad.to(compute_dtype), [s.to(compute_dtype) for s in state])
    return update, tuple(new.to(old.dtype) for new, old in zip(new_state, state))


@torch.no_grad()
def fast_update_(
    weights: FusedWeights,
    grad: Tensor,
    state: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    apply: Callable[[slice, Tensor], None] | None = None,
    maximize: bool = False,
) -> Tensor | None:
    """No-grad update, chunk by chunk, writing the new ``state`` in place.

    The same rule as :func:`_step`, computed in place in cache-sized work buffers: per chunk and
    layer, two ``addmm`` into one gate buffer, one in-place sigmoid, and the cell update written
    straight into the stored state (through float32 buffers when the state is stored in another
    dtype). With ``apply``, each chunk's update is handed to ``apply(rows, update)`` and nothing of
    size N is allocated, so transient memory is that of one chunk whatever the parameter size.

    Args:
        weights (FusedWeights): from :meth:`CoordinatewiseLSTM.fused_weights`.
        grad (Tensor): flat gradient ``[N]``, any floating dtype.
        state (Tensor): ``[2 * num_layers, N, hidden_size]``; updated in place.
        chunk_size (int, optional): coordinates per chunk (default: 8192).
        apply (Callable, optional): receives ``(rows, update[rows])`` for each chunk (default: None,
            return the whole update instead).
        maximize (bool, optional): feed the network :math:`-\nabla` (default: False).

    Returns:
        The update ``[N]`` in the weights' dtype, or None when ``apply`` is given.
    """
    dtype, device = weights.head_weight.dtype, grad.device
    total, hidden = grad.shape[0], state.shape[-1]
    chunk = max(1, min(chunk_size, total))
    gates_buffer = torch.empty(chunk, 4 * hidden, dtype=dtype, device=device)
    tanh_buffer = torch.empty(chunk, hidden, dtype=dtype, device=device)
    state_buffer = torch.empty(state.shape[0], chunk, hidden, dtype=dtype, device=device) if state.dtype != dtype else None
    update = torch.empty(total if apply is None else chunk, dtype=dtype, device=device)
    for start in range(0, total, chunk):
        rows = slice(start, start + chunk)
        n = min(chunk, total - start)
        chunk_grad = grad[rows].to(dtype)
        x = weights.preprocess(-chunk_grad if maximize else chunk_grad)
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
        chunk_update = update[rows] if apply is None else update[:n]
        torch.addmm(weights.head_bias, x, weights.head_weight, out=chunk_update.unsqueeze(1))
        chunk_update.mul_(weights.output_scale)
        if apply is not None:
            apply(rows, chunk_update)
    return update if apply is None else None
