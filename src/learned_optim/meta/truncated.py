r"""Truncated backpropagation through time over one optimizee (Andrychowicz et al., 2016, sec. 2).

An episode optimizes a fresh problem for ``horizon`` steps with the learned rule

.. math::
    \theta_{t+1} = \theta_t + g_t, \qquad (g_t, h_{t+1}) = m(\nabla_t, h_t; \phi), \qquad
    \nabla_t = \nabla_\theta f(\theta_t, t)\ \text{(detached)},

cut into unrolls of ``unroll`` steps. After each unroll, one meta-step on
:math:`L(\phi) = \sum_{t \in \text{unroll}} f(\theta_t, t)` (the paper's objective) or
:math:`\sum_t \log f(\theta_t, t)` (:data:`OBJECTIVES`); :math:`\theta`, :math:`h` and
:math:`\nabla` carry over to the next unroll with the graph cut. All parameter tensors are
flattened into one coordinate vector: the rule is coordinatewise, so this equals running it per
tensor (as :class:`~learned_optim.LearnedOptimizer` does) and costs one network call per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .tasks import Params, Problem

OBJECTIVES = {"sum": lambda loss: loss, "log": torch.log}
r"""Meta-loss term of the loss :math:`f_t` of a step. ``"sum"``: :math:`f_t`
(the paper). ``"log"``: :math:`\log f_t`, whose gradient :math:`\nabla f_t / f_t` weighs a step by its
relative progress, so late steps (small losses) are not drowned out by the large early ones; it
needs positive losses (cross-entropy is)."""


@dataclass
class Recipe:
    """Truncated-BPTT hyperparameters (defaults: the paper's).

    Args:
        horizon (int): optimizee steps per episode (default: 100).
        unroll (int): steps per truncation, one meta-step each (default: 20).
        meta_lr (float): Adam learning rate on the network's weights (default: 3e-3; 1e-2 never leaves
            ln 10 on MNIST).
        clip (float | None): clip the meta-gradient's global norm to this value (default: None).
        second_order (bool): keep second derivatives through :math:`\nabla_t` (default: False).
        objective (str): meta-loss per step, a key of :data:`OBJECTIVES` (default: ``"sum"``).
    """

    horizon: int = 100
    unroll: int = 20
    meta_lr: float = 3e-3
    clip: float | None = None
    second_order: bool = False
    objective: str = "sum"

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.unroll < 1:
            raise ValueError(f"Invalid horizon/unroll: {self.horizon}/{self.unroll}; both must be positive")
        if self.meta_lr <= 0:
            raise ValueError(f"Invalid meta learning rate: {self.meta_lr}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Invalid objective: {self.objective!r}; choose one of {list(OBJECTIVES)}")


class FlatParams:
    """Views a dict of tensors as one flat coordinate vector and back."""

    def __init__(self, params: Params) -> None:
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]

    def flatten(self, params: Params) -> Tensor:
        return torch.cat([params[name].reshape(-1) for name in self.names])

    def unflatten(self, flat: Tensor) -> Params:
        chunks = flat.split(self.sizes)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}


class Unroller:
    """Runs a problem through the learned rule in truncations, yielding differentiable meta-losses.

    Args:
        network (nn.Module): the update rule being meta-trained: ``network(grad [N], state) ->
            (update [N], state)`` and ``network.initial_state(N, dtype, device)``, such as
            :class:`~learned_optim.CoordinatewiseLSTM`.
        problem (Problem): the optimizee.
        second_order (bool, optional): keep the graph through the gradient input (default: False).
        objective (str, optional): meta-loss per step, a key of :data:`OBJECTIVES` (default: ``"sum"``).
    """

    def __init__(self, network: nn.Module, problem: Problem, second_order: bool = False, objective: str = "sum") -> None:
        self.network = network
        self.problem = problem
        self.second_order = second_order
        self.objective = OBJECTIVES[objective]
        self.layout = FlatParams(problem.params)
        self.theta = self.layout.flatten(problem.params).detach()
        self.state = network.initial_state(self.theta.numel(), dtype=self.theta.dtype, device=self.theta.device)
        self.step = 0
        _, self.grad = self._loss_and_grad(self.theta.requires_grad_())

    def _loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`f(\theta, t)` and :math:`\nabla_\theta f`, detached unless ``second_order``."""
        loss = self.problem.loss(self.layout.unflatten(theta), self.step)
        (grad,) = torch.autograd.grad(loss, theta, retain_graph=True, create_graph=self.second_order)
        return loss, grad if self.second_order else grad.detach()

    def unroll(self, steps: int) -> tuple[Tensor, list[float]]:
        """Advance ``steps`` steps; returns the differentiable meta-loss (the sum of the steps' objective
        terms) and the losses."""
        meta_loss = torch.zeros((), dtype=self.theta.dtype, device=self.theta.device)
        losses = []
        for _ in range(steps):
            update, self.state = self.network(self.grad, self.state)
            self.theta = self.theta + update
            self.step += 1
            loss, self.grad = self._loss_and_grad(self.theta)
            meta_loss = meta_loss + self.objective(loss)
            losses.append(float(loss.detach()))
        return meta_loss, losses

    def truncate(self) -> None:
        """Cut the graph: the next unroll starts from the current values with no history."""
        self.theta, self.grad = self.theta.detach(), self.grad.detach()
        self.state = tuple(s.detach() for s in self.state)


def meta_step(
    network: nn.Module, meta_optimizer: torch.optim.Optimizer, meta_loss: Tensor, clip: float | None
) -> bool:
    """One meta-step on ``meta_loss``; skipped (returns False) if the loss or its gradient is not finite."""
    meta_optimizer.zero_grad(set_to_none=True)
    if not math.isfinite(float(meta_loss.detach())):
        return False
    meta_loss.backward()
    params = [p for p in network.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
    if not torch.isfinite(norm):
        meta_optimizer.zero_grad(set_to_none=True)
        return False
    meta_optimizer.step()
    return True


def train_episode(
    network: nn.Module, meta_optimizer: torch.optim.Optimizer, problem: Problem, recipe: Recipe
) -> dict:
    """One episode of truncated BPTT on ``problem``: ``horizon / unroll`` meta-steps.

    Returns:
        ``{"meta_loss": mean meta-loss per unroll, "losses": per-step losses, "skipped": skipped meta-steps}``.
    """
    unroller = Unroller(network, problem, recipe.second_order, recipe.objective)
    meta_losses, losses, skipped = [], [], 0
    for start in range(0, recipe.horizon, recipe.unroll):
        meta_loss, unroll_losses = unroller.unroll(min(recipe.unroll, recipe.horizon - start))
        skipped += not meta_step(network, meta_optimizer, meta_loss, recipe.clip)
        meta_losses.append(float(meta_loss.detach()))
        losses += unroll_losses
        unroller.truncate()
    return {"meta_loss": sum(meta_losses) / len(meta_losses), "losses": losses, "skipped": skipped}
