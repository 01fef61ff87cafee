r"""Run-time step-scale control: a scalar per parameter group that the rule adapts while it trains.

The network's update :math:`u_t` is applied as :math:`\theta_{t+1} = \theta_t + \eta\, s_t\, u_t`, with the scale
:math:`s_t = e^{\ell_t}` set by a scale-free hypergradient step (Baydin et al., 2018, on the log scale, normalised
as Adam normalises a gradient). Since :math:`\partial f(\theta_t) / \partial \ell_{t-1} = \eta\, s_{t-1}
\langle \nabla_t, u_{t-1} \rangle`, the alignment

.. math::
    a_t = \cos(\nabla_t, u_{t-1}) = \frac{\langle \nabla_t, u_{t-1} \rangle}{\lVert \nabla_t \rVert\,
    \lVert u_{t-1} \rVert}

is negative while the last step could have been longer and positive once it overshot. Then, with
:math:`\beta_1, \beta_2` = :data:`BETAS` and the bias-corrected moments :math:`\hat m_t, \hat v_t` of :math:`a`,

.. math::
    \ell_t = \operatorname{clip}\big(\ell_{t-1} - \rho\, \hat m_t / (\sqrt{\hat v_t} + \epsilon),\
    \log s_{\min},\ \log s_{\max}\big),

so the scale moves by at most :math:`\rho` (the network's ``scale_rate``) per step whatever the gradients' size,
and little where the alignment is noise (:math:`\hat m_t / \sqrt{\hat v_t}` small). A step with no previous
update, or a zero gradient, leaves the controller unchanged. The state is four numbers per group,
``(log scale, m, v, count)`` (:data:`INITIAL_STATE`); :func:`control_step` updates any batch of them at once (the
optimizer's groups, meta-training's problems).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .fusion import DTensor

if DTensor is not None:
    from torch.distributed.tensor import Partial, Replicate, Shard

BETAS = (0.9, 0.99)
"""The decay rates of the alignment's first and second moments."""
SCALE_BOUNDS = (0.1, 10.0)
r""":math:`(s_{\min}, s_{\max})`: the scale stays within a factor of 10 of the network's own."""
EPSILON = 1e-8
INITIAL_STATE = (0.0, 0.0, 0.0, 0.0)
"""``(log scale, m, v, count)`` before the first step: the network's own scale."""


def alignment_terms(grads: list[Tensor], previous: list[Tensor], params: list[Tensor] | None = None) -> Tensor:
    r"""``[3]`` float64 on the CPU: :math:`\langle \nabla, u \rangle`, :math:`\lVert \nabla \rVert^2`,
    :math:`\lVert u \rVert^2` summed over the tensors of one group (a dot product per tensor and two foreach norms,
    one transfer per device). Where ``params[k]`` is a ``DTensor``, ``grads[k]`` and ``previous[k]`` are its local
    shard's, and their terms are summed over the shards (a collective over its mesh), so every rank steps the same
    scale."""
    grads = [grad.to(update.dtype) for grad, update in zip(grads, previous)]
    by_device: dict[torch.device, list[int]] = {}
    for k, update in enumerate(previous):
        by_device.setdefault(update.device, []).append(k)
    total = torch.zeros(3, dtype=torch.float64)
    for indices in by_device.values():
        mine, theirs = [grads[k] for k in indices], [previous[k] for k in indices]
        terms = torch.stack([torch.stack([torch.dot(grad, update) for grad, update in zip(mine, theirs)]),
                             torch.stack(torch._foreach_norm(mine)).square(),
                             torch.stack(torch._foreach_norm(theirs)).square()], dim=1).double()  # [tensors, 3]
        for row, k in enumerate(indices):
            if params is not None and DTensor is not None and isinstance(params[k], DTensor):
                terms[row] = _summed_over_shards(terms[row], params[k])
        total += terms.sum(0).cpu()
    return total


def _summed_over_shards(terms: Tensor, param: Tensor) -> Tensor:
    """The sum of a sharded parameter's per-shard ``terms`` over its mesh (replicated dimensions counted once)."""
    placements = [Partial() if isinstance(placement, Shard) else Replicate() for placement in param.placements]
    return DTensor.from_local(terms, param.device_mesh, placements).full_tensor()


def control_step(state: Tensor, terms: Tensor, rate: float) -> Tensor:
    r"""The controllers' next state: ``state [..., 4]`` (:data:`INITIAL_STATE` layout) after the alignment whose
    ``terms [..., 3]`` (:func:`alignment_terms`) were measured, each controller on its own row; rows with no
    previous update or a zero gradient are returned unchanged."""
    dot, grad_norm2, previous_norm2 = terms.unbind(-1)
    log_scale, m, v, count = state.unbind(-1)
    valid = (grad_norm2 > 0) & (previous_norm2 > 0)
    alignment = torch.where(valid, dot / (grad_norm2 * previous_norm2).clamp_min(1e-300).sqrt(), 0.0)
    new_m = BETAS[0] * m + (1 - BETAS[0]) * alignment
    new_v = BETAS[1] * v + (1 - BETAS[1]) * alignment ** 2
    new_count = count + 1
    m_hat = new_m / (1 - BETAS[0] ** new_count)
    v_hat = new_v / (1 - BETAS[1] ** new_count)
    low, high = (math.log(bound) for bound in SCALE_BOUNDS)
    new_log_scale = (log_scale - rate * m_hat / (v_hat.sqrt() + EPSILON)).clamp(low, high)
    return torch.where(valid[..., None], torch.stack([new_log_scale, new_m, new_v, new_count], -1), state)


class BatchControl:
    """The controllers of ``K`` problems stepped together (meta-training's rollouts): state ``[K, 4]`` and each
    problem's previous update ``[K, N]``. :meth:`scaled` is the one step they all take."""

    def __init__(self, rate: float, problems: int, coordinates: int, like: Tensor) -> None:
        self.rate = rate
        self.state = torch.tensor(INITIAL_STATE, dtype=torch.float64).repeat(problems, 1)
        self.previous = like.new_zeros(problems, coordinates)

    def scaled(self, update: Tensor, grad: Tensor) -> Tensor:
        """``update [K, N]`` times each problem's new scale, its controller stepped first on ``grad [K, N]`` and its
        previous update (the scale a constant of any graph ``update`` has)."""
        grad = grad.detach().to(self.previous.dtype)
        terms = torch.stack([(grad * self.previous).sum(1), (grad * grad).sum(1),
                             (self.previous * self.previous).sum(1)], -1).double()
        self.state = control_step(self.state, terms, self.rate)
        self.previous = update.detach()
        return update * self.state[:, 0].exp().to(update.dtype)[:, None]
