r"""Imitation of a tuned Adam (Chen et al., 2020, "Training stronger baselines for learning to optimize").

In an imitation episode the problems are optimized by Adam (:math:`\eta` tuned on the task, torch's
other defaults), and the learned rule is fed Adam's gradients along Adam's trajectory and trained,
by truncated BPTT through its own state, to output Adam's updates :math:`u_t`:

.. math::
    L_k(\phi) = \frac{\sum_{t \in \text{unroll}} \lVert g_t - u_t \rVert^2}
                     {\sum_{t \in \text{unroll}} \lVert u_t \rVert^2},
    \qquad (g_t, h_{t+1}) = m(\nabla_t, h_t; \phi),

the squared error relative to the size of Adam's updates, so that its meta-gradients have the same
scale whatever the task. It teaches a fresh network a sound default (a well-tuned hand-designed
update) that the ordinary episodes then improve on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .tasks import ProblemBatch
from .truncated import AllReduce, Recipe, Unroller, meta_step

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adam_update(grad: Tensor, moments: tuple[Tensor, Tensor], step: int,
                lr: float) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""Adam's update :math:`-\eta\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)` and the new moments
    (torch.optim.Adam's math)."""
    (beta1, beta2), (m, v) = ADAM_BETAS, moments
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return -lr * m_hat / (v_hat.sqrt() + ADAM_EPS), (m, v)


def imitation_episode(network: nn.Module, meta_optimizer: torch.optim.Optimizer, problems: ProblemBatch,
                      recipe: Recipe, scale: Tensor | None = None, total_problems: int | None = None,
                      all_reduce: AllReduce | None = None, generators: list[torch.Generator] | None = None,
                      told_horizon: bool = True) -> dict:
    """One imitation episode: ``horizon / unroll`` meta-steps on the relative squared error to Adam's updates.

    Arguments and return value as :func:`~learned_optim.meta.truncated.train_episode`; ``meta_loss`` is the
    mean imitation loss per unroll, ``losses`` Adam's mean loss per step.
    """
    teacher = Unroller(network, problems, horizon=recipe.horizon, scale=scale,  # follows Adam's trajectory
                       total_steps=recipe.horizon if told_horizon else None)
    total = total_problems or teacher.layout.problems
    moments = (torch.zeros_like(teacher.psi), torch.zeros_like(teacher.psi))
    state = teacher.state
    meta_losses, losses, skipped = [], [], 0
    for start in range(0, recipe.horizon, recipe.unroll):
        error = torch.zeros(teacher.layout.problems, dtype=teacher.psi.dtype, device=teacher.psi.device)
        size = torch.zeros_like(error)
        for step in range(start + 1, min(start + recipe.unroll, recipe.horizon) + 1):
            update, state = network(teacher.grad, state, **teacher.progress)
            target, moments = adam_update(teacher.grad, moments, step, recipe.imitation_lr)
            error = error + teacher.layout.per_problem(update - target).pow(2).sum(1)
            size = size + teacher.layout.per_problem(target).pow(2).sum(1)
            losses.append(teacher.advance(target).sum() / total)  # Adam's trajectory, step by step
        value = meta_step(network, meta_optimizer, (error / size.clamp(min=1e-30)).sum() / total, recipe.clip,
                          all_reduce)
        skipped += value is None
        meta_losses.append(math.nan if value is None else value)
        state = tuple(s.detach() for s in state)
    losses = torch.stack(losses)
    if all_reduce is not None:
        all_reduce(losses)
    return {"meta_loss": sum(meta_losses) / len(meta_losses), "losses": losses.tolist(), "skipped": skipped}
