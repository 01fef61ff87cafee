r"""Persistent evolution strategies (Vicol, Metz and Sohl-Dickstein, ICML 2021): meta-gradients over long
horizons from forward passes of the rule only.

An episode runs each of its ``K`` problems as an antithetic pair of particles for ``horizon`` steps, cut into
unrolls. Before each unroll a fresh :math:`\epsilon_k \sim \mathcal N(0, \sigma^2 I)` over the network's weights
:math:`\phi` is drawn for pair ``k``: one particle steps with :math:`\phi + \epsilon_k`, the other with
:math:`\phi - \epsilon_k`, and :math:`\epsilon_k` is added to the pair's accumulated perturbation :math:`\xi_k`
(zero at the episode's start). After the unroll, with :math:`L^\pm_k` the objective (:data:`OBJECTIVES`) summed
over its steps,

.. math::
    \hat g = \frac{1}{2 \sigma^2 K} \sum_k (L^+_k - L^-_k)\, \xi_k

is the meta-gradient, an unbiased estimate of the gradient of the Gaussian-smoothed objective with respect to
the weights used at every step so far: carrying :math:`\xi` across unrolls removes the truncation bias of
truncated BPTT. The particles' steps run under ``no_grad`` through the optimizer's own step
(:func:`~learned_optim.functional.fast_update_`, the fused kernel where it applies); the optimizee's backward is
the only autograd. Noise for problem ``k`` comes from its own generator, so a run is the same on any number of
processes and after a resume.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..control import BatchControl
from ..functional import FusedWeights, fast_update_
from .tasks import Problem, ProblemBatch, stack_problems
from .truncated import OBJECTIVES, AllReduce, BatchLayout, Recipe, apply_meta_gradient


class Particles:
    """The ``K`` problems of a batch stepped by one network per problem, without a meta-graph: parameters
    :math:`\\psi` (flat, problem-major), their gradient, and each problem's LSTM state and moments; a network with
    progress inputs is told ``total_steps`` (None: not told)."""

    def __init__(self, network: nn.Module, problems: ProblemBatch, scale: Tensor | None = None,
                 total_steps: int | None = None) -> None:
        self.problems, self.scale, self.total_steps = problems, scale, total_steps
        self.layout = BatchLayout(problems.params)
        theta = self.layout.flatten(problems.params).detach()
        self.psi = (theta if scale is None else theta / scale).clone()
        size = self.psi.numel() // self.layout.problems
        self.states = [network.initial_state(size, dtype=self.psi.dtype, device=self.psi.device)
                       for _ in range(self.layout.problems)]
        self.moments = [network.initial_moments(size, self.psi.device) for _ in range(self.layout.problems)]
        self.step = 0
        self.initial_loss, self.grad = self.loss_and_grad()
        rate = getattr(network, "scale_rate", 0.0)
        self.control = BatchControl(rate, self.layout.problems, size, self.psi) if rate else None

    def loss_and_grad(self) -> tuple[Tensor, Tensor]:
        """The losses ``[K]`` at the current step and their gradient with respect to :math:`\\psi`."""
        leaf = self.psi.detach().requires_grad_()
        theta = leaf if self.scale is None else leaf * self.scale
        losses = self.problems.loss(self.layout.unflatten(theta), self.step)
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), grad

    def advance(self, weights: list[FusedWeights]) -> Tensor:
        """One step, problem ``k`` with ``weights[k]`` (and its step scale, for a network with step-scale control);
        returns the new losses ``[K]``."""
        grads, psi = self.layout.per_problem(self.grad), self.layout.per_problem(self.psi)
        weights = [w.at_progress(self.step, self.total_steps) for w in weights]
        with torch.no_grad():
            if self.control is None:
                for k, (state, moments) in enumerate(zip(self.states, self.moments)):
                    fast_update_(weights[k], grads[k], state, out=psi[k], moments=moments)
            else:
                updates = torch.stack([fast_update_(weights[k], grads[k], state, moments=moments)
                                       for k, (state, moments) in enumerate(zip(self.states, self.moments))])
                psi.add_(self.control.scaled(updates, grads))
        self.step += 1
        loss, self.grad = self.loss_and_grad()
        return loss


def _frozen_weights(scratch: nn.Module, phi: Tensor) -> FusedWeights:
    """``scratch``'s fused weights with its parameters set to ``phi``, detached copies (``scratch`` is reused)."""
    vector_to_parameters(phi, scratch.parameters())
    weights = scratch.fused_weights()
    return weights._replace(layers=[(w.detach().clone(), b.detach().clone()) for w, b in weights.layers],
                            head_weight=weights.head_weight.detach().clone(),
                            head_bias=weights.head_bias.detach().clone())


def pes_episode(network: nn.Module, meta_optimizer: torch.optim.Optimizer, problems: ProblemBatch | Problem,
                recipe: Recipe, scale: Tensor | None = None, total_problems: int | None = None,
                all_reduce: AllReduce | None = None, generators: list[torch.Generator] | None = None,
                told_horizon: bool = True) -> dict:
    """One PES episode: ``horizon / unroll`` meta-steps, each on :math:`\\hat g` (module docstring).

    Arguments and return value as :func:`~learned_optim.meta.truncated.train_episode`; ``generators[k]`` draws
    problem ``k``'s noise (default: one seeded by ``k``), ``recipe.pes_sigma`` is :math:`\\sigma`, and
    ``meta_loss`` is the mean over the pairs of :math:`(L^+_k + L^-_k) / 2` per unroll.
    """
    batch = stack_problems([problems]) if isinstance(problems, Problem) else problems
    pair = [Particles(network, batch, scale, recipe.horizon if told_horizon else None) for _ in range(2)]
    count = pair[0].layout.problems
    total = total_problems or count
    generators = generators or [torch.Generator().manual_seed(k) for k in range(count)]
    objective, sigma = OBJECTIVES[recipe.objective], recipe.pes_sigma
    scratch = copy.deepcopy(network).requires_grad_(False)
    accumulated = None
    meta_losses, losses, skipped = [], [], 0
    for start in range(0, recipe.horizon, recipe.unroll):
        phi = parameters_to_vector(network.parameters()).detach()
        noise = torch.stack([torch.randn(phi.numel(), generator=g, dtype=phi.dtype) for g in generators]).to(phi)
        noise.mul_(sigma)
        accumulated = noise if accumulated is None else accumulated + noise
        with torch.no_grad():
            weights = [[_frozen_weights(scratch, phi + sign * eps) for eps in noise] for sign in (1, -1)]
        unroll_loss = [torch.zeros(count, dtype=torch.float64, device=phi.device) for _ in pair]
        for _ in range(min(recipe.unroll, recipe.horizon - start)):
            step_losses = []
            for particles, particle_weights, total_loss in zip(pair, weights, unroll_loss):
                loss = particles.advance(particle_weights)
                total_loss += objective(loss, particles.initial_loss, particles.step, recipe.horizon).double()
                step_losses.append(loss)
            losses.append((step_losses[0] + step_losses[1]).sum() / (2 * total))
        difference = (unroll_loss[0] - unroll_loss[1]).to(phi.dtype)
        gradient = (difference[:, None] * accumulated).sum(0) / (2 * sigma ** 2 * total)
        value = apply_meta_gradient(network, meta_optimizer, gradient,
                                    ((unroll_loss[0] + unroll_loss[1]).sum() / (2 * total)).to(phi.dtype),
                                    recipe.clip, all_reduce)
        skipped += value is None
        meta_losses.append(math.nan if value is None else value)
    losses = torch.stack(losses)
    if all_reduce is not None:
        all_reduce(losses)
    return {"meta_loss": sum(meta_losses) / len(meta_losses), "losses": losses.tolist(), "skipped": skipped}
