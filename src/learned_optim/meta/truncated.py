r"""Truncated backpropagation through time over a batch of optimizees (Andrychowicz et al., 2016, sec. 2).

An episode optimizes ``K`` fresh problems for ``horizon`` steps with the learned rule

.. math::
    \theta_{t+1} = \theta_t + g_t, \qquad (g_t, h_{t+1}) = m(\nabla_t, h_t; \phi), \qquad
    \nabla_t = \nabla_\theta f(\theta_t, t)\ \text{(detached)},

cut into unrolls of ``unroll`` steps. After each unroll, one meta-step on the mean over the ``K``
problems of :math:`L(\phi) = \sum_{t \in \text{unroll}} \ell(f(\theta_t, t))`, the loss after
each of the unroll's updates (so the last update is trained too; :data:`OBJECTIVES` gives
:math:`\ell`); :math:`\theta`, :math:`h` and :math:`\nabla` carry over to the next unroll with the
graph cut. All coordinates of all ``K`` problems are one flat vector, so each step is one network
call: the rule is coordinatewise, so this equals running it per tensor and per problem (as
:class:`~learned_optim.LearnedOptimizer` does).

Random scaling (Lv et al., 2017): with scales :math:`c = e^{u}`, :math:`u \sim U(-r, r)` per
coordinate, the rule optimizes :math:`\psi` with :math:`\theta = c \odot \psi`, so it sees
:math:`\nabla_\psi = c \odot \nabla_\theta` and cannot rely on one gradient scale.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..control import BatchControl
from .metrics import FINAL_STEPS
from .tasks import Params, Problem, ProblemBatch, stack_problems

OBJECTIVES: dict[str, Callable[[Tensor, Tensor, int, int], Tensor]] = {
    "sum": lambda loss, initial, step, horizon: loss,
    "log": lambda loss, initial, step, horizon: loss.log(),
    "log_ratio": lambda loss, initial, step, horizon: (loss / initial).log() / horizon,
    "log_final": lambda loss, initial, step, horizon: (loss.log() if step > horizon - FINAL_STEPS
                                                       else torch.zeros_like(loss)),
}
r"""Meta-loss term :math:`\ell(f_t)` of step :math:`t`, given the problem's initial loss :math:`f_0` and the
horizon :math:`T`. ``"sum"``: :math:`f_t` (the paper). ``"log"``: :math:`\log f_t`, whose gradient
:math:`\nabla f_t / f_t` weighs a step by its relative progress, so late steps (small losses) are not
drowned out by the large early ones. ``"log_ratio"``: :math:`\log(f_t / f_0) / T`, summing to
:math:`\operatorname{mean}_t \log(f_t / f_0)` over the horizon (Wichrowska et al., 2017): the same
direction as ``"log"``, on a scale comparable across problems and horizons. ``"log_final"``: :math:`\log f_t`
for the last :data:`~learned_optim.meta.metrics.FINAL_STEPS` steps of the horizon, 0 before: the logs of the
losses whose mean is the ``final`` metric that evaluation reports and validation selects on (the paper's weights
:math:`w_t` of its eq. 3, 1 on those steps only); it needs one unroll over the whole horizon, through which its
meta-gradient reaches the early updates. The logs need positive losses."""


@dataclass
class Recipe:
    """Truncated-BPTT hyperparameters (defaults: the paper's).

    Args:
        horizon (int): optimizee steps per episode (default: 100).
        unroll (int): steps per truncation, one meta-step each (default: 20).
        meta_lr (float): Adam learning rate on the network's weights (default: 3e-3; 1e-2 never leaves
            ln 10 on MNIST).
        clip (float | None): clip the meta-gradient's global norm to this value (default: None).
        second_order (bool): keep second derivatives through :math:`\\nabla_t` (default: False).
        objective (str): meta-loss per step, a key of :data:`OBJECTIVES` (default: ``"sum"``).
        meta_batch (int): optimizees per meta-step, the meta-gradient averaged over them (default: 1).
        random_scale (float): :math:`r` of random scaling, 0 for none (default: 0; Lv et al. use 3).
        random_scale_per (str): one scale per ``"coordinate"`` (Lv et al.) or per ``"tensor"`` (a layer's weights
            scaled together, as a model's layers differ in scale; Chen et al. 2020) (default: ``"coordinate"``).
        imitation (float): fraction of episodes that imitate a tuned Adam instead
            (:mod:`~learned_optim.meta.imitation`; Chen et al., 2020) (default: 0).
        imitation_lr (float): the imitated Adam's learning rate, tuned on the task (default: 0.01).
        estimator (str): how the other episodes estimate the meta-gradient: ``"bptt"``, truncated
            backpropagation through time, or ``"pes"``, persistent evolution strategies
            (:mod:`~learned_optim.meta.pes`), which runs forward passes only (default: ``"bptt"``).
        pes_sigma (float): the standard deviation of PES's perturbations of the weights (default: 0.01).
        min_horizon (int | None): with it, each episode's horizon is drawn log-uniformly from
            ``[min_horizon, horizon]`` (default: None, every episode ``horizon`` steps).
        unknown_horizon (float): the fraction of episodes in which a network with progress inputs is not told the
            horizon, as a user who passes no ``total_steps`` (default: 0).
    """

    horizon: int = 100
    unroll: int = 20
    meta_lr: float = 3e-3
    clip: float | None = None
    second_order: bool = False
    objective: str = "sum"
    meta_batch: int = 1
    random_scale: float = 0.0
    random_scale_per: str = "coordinate"
    imitation: float = 0.0
    imitation_lr: float = 0.01
    estimator: str = "bptt"
    pes_sigma: float = 0.01
    min_horizon: int | None = None
    unknown_horizon: float = 0.0

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.unroll < 1:
            raise ValueError(f"Invalid horizon/unroll: {self.horizon}/{self.unroll}; both must be positive")
        if self.meta_lr <= 0:
            raise ValueError(f"Invalid meta learning rate: {self.meta_lr}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Invalid objective: {self.objective!r}; choose one of {list(OBJECTIVES)}")
        if self.estimator not in ("bptt", "pes"):
            raise ValueError(f"Invalid estimator: {self.estimator!r}; choose 'bptt' or 'pes' (imitation episodes come "
                             "from the imitation fraction)")
        if not (math.isfinite(self.pes_sigma) and self.pes_sigma > 0):
            raise ValueError(f"Invalid pes_sigma: {self.pes_sigma}; it must be finite and > 0")
        if self.objective == "log_final" and self.unroll < self.horizon and self.estimator == "bptt":
            raise ValueError(f"The log_final objective needs one unroll over the whole horizon (unroll {self.unroll} < "
                             f"horizon {self.horizon}): its terms are the last steps' losses, so the earlier unrolls "
                             "would have no meta-gradient; set the unroll to the horizon, or use the pes estimator")
        if self.min_horizon is not None and not 1 <= self.min_horizon <= self.horizon:
            raise ValueError(f"Invalid min_horizon: {self.min_horizon}; it must be in [1, horizon = {self.horizon}]")
        if not 0 <= self.unknown_horizon <= 1:
            raise ValueError(f"Invalid unknown_horizon: {self.unknown_horizon}; it must be a fraction in [0, 1]")
        if self.meta_batch < 1:
            raise ValueError(f"Invalid meta_batch: {self.meta_batch}; it must be a positive integer")
        if self.random_scale < 0:
            raise ValueError(f"Invalid random_scale: {self.random_scale}; it must be >= 0")
        if self.random_scale_per not in ("coordinate", "tensor"):
            raise ValueError(f"Invalid random_scale_per: {self.random_scale_per!r}; choose 'coordinate' or 'tensor'")
        if not 0 <= self.imitation <= 1 or self.imitation_lr <= 0:
            raise ValueError(f"Invalid imitation fraction/lr: {self.imitation}/{self.imitation_lr}; "
                             "the fraction must be in [0, 1] and the lr positive")


class BatchLayout:
    """Views a batch's stacked parameters (``[K, *shape]`` each) as one flat vector, problem-major:
    problem ``k``'s coordinates are ``flat.view(K, N)[k]``."""

    def __init__(self, params: Params) -> None:
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.problems = self.shapes[0][0]
        self.sizes = [math.prod(shape[1:]) for shape in self.shapes]

    def flatten(self, params: Params) -> Tensor:
        return torch.cat([params[name].reshape(self.problems, -1) for name in self.names], dim=1).reshape(-1)

    def unflatten(self, flat: Tensor) -> Params:
        chunks = flat.view(self.problems, -1).split(self.sizes, dim=1)
        return {name: chunk.reshape(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}

    def per_problem(self, flat: Tensor) -> Tensor:
        """``flat [K * N] -> [K, N]``."""
        return flat.view(self.problems, -1)


def random_scales(layout: BatchLayout, radius: float, generators: list[torch.Generator],
                  per: str = "coordinate") -> Tensor | None:
    r"""Coordinate scales :math:`e^{U(-r, r)}`, problem ``k``'s drawn with ``generators[k]``, one per coordinate or
    one per tensor (repeated over its coordinates); None if ``radius`` is 0."""
    if radius == 0:
        return None
    sizes = torch.tensor(layout.sizes)
    draws = len(layout.sizes) if per == "tensor" else int(sizes.sum())
    scales = [(torch.rand(draws, generator=g) * 2 - 1).mul_(radius).exp_() for g in generators]
    return torch.cat([s.repeat_interleave(sizes) if per == "tensor" else s for s in scales])


class Unroller:
    """Runs a batch of problems through the learned rule in truncations, yielding differentiable meta-losses.

    Args:
        network (nn.Module): the update rule being meta-trained: ``network(grad [N], state) ->
            (update [N], state)``, ``network.initial_state(N, dtype, device)`` and
            ``network.initial_moments(N, device)`` (None, or moments appended to the state), such as
            :class:`~learned_optim.CoordinatewiseLSTM`.
        problems (ProblemBatch or Problem): the optimizees (one problem is a batch of one).
        second_order (bool, optional): keep the graph through the gradient input (default: False).
        objective (str, optional): meta-loss per step, a key of :data:`OBJECTIVES` (default: ``"sum"``).
        horizon (int, optional): the episode's horizon :math:`T`, for ``"log_ratio"`` (default: 100).
        scale (Tensor, optional): random scaling :math:`c` of the coordinates (default: None).
        total_steps (int, optional): the horizon as a network with progress inputs is told it (``step=``,
            ``total_steps=``), as ``LearnedOptimizer(..., total_steps=)`` tells it (default: None, not told).
    """

    def __init__(self, network: nn.Module, problems: ProblemBatch | Problem, second_order: bool = False,
                 objective: str = "sum", horizon: int = 100, scale: Tensor | None = None,
                 total_steps: int | None = None) -> None:
        self.network = network
        self.problems = stack_problems([problems]) if isinstance(problems, Problem) else problems
        self.second_order = second_order
        self.objective = OBJECTIVES[objective]
        self.horizon = horizon
        self.layout = BatchLayout(self.problems.params)
        theta = self.layout.flatten(self.problems.params).detach()
        self.scale = scale
        self.psi = theta if scale is None else theta / scale
        size = self.psi.numel()
        moments = network.initial_moments(size, self.psi.device)
        self.state = (*network.initial_state(size, dtype=self.psi.dtype, device=self.psi.device),
                      *(() if moments is None else (moments,)))
        self.step = 0
        initial, self.grad = self.loss_and_grad(self.psi)
        self.initial_loss = initial.detach()
        self.total_steps = total_steps
        rate = getattr(network, "scale_rate", 0.0)
        problems = self.layout.problems
        self.control = BatchControl(rate, problems, size // problems, self.psi) if rate else None

    @property
    def progress(self) -> dict[str, int | None]:
        """The step's progress arguments, for a network with progress inputs (none for any other network)."""
        return dict(step=self.step, total_steps=self.total_steps) if getattr(self.network, "progress", False) else {}

    def controlled(self, update: Tensor) -> Tensor:
        """``update`` times each problem's step scale, its controller stepped first (:mod:`learned_optim.control`;
        a network without step-scale control: ``update`` itself). The scale is a constant of the meta-graph."""
        if self.control is None:
            return update
        per_problem = self.layout.per_problem
        return self.control.scaled(per_problem(update), per_problem(self.grad)).reshape(-1)

    @property
    def theta(self) -> Tensor:
        """The optimizees' parameters, flat."""
        return self.psi if self.scale is None else self.psi * self.scale

    def loss_and_grad(self, psi: Tensor) -> tuple[Tensor, Tensor]:
        r"""The losses :math:`f_k(c \odot \psi, t)` ``[K]`` and :math:`\nabla_\psi \sum_k f_k`.

        With ``second_order`` the gradient keeps its graph. Otherwise it is detached, and the losses reach
        :math:`\psi`'s graph (if it has one) through the first-order surrogate
        :math:`\bar f_k + \langle \bar\nabla_k, \psi_k - \bar\psi_k \rangle` (bars: detached values): the same
        values and the same first-order meta-gradient, without keeping the optimizee's graph for the
        meta-step or backpropagating through the optimizee a second time.
        """
        leaf = psi if self.second_order and psi.requires_grad else psi.detach().requires_grad_()
        theta = leaf if self.scale is None else leaf * self.scale
        losses = self.problems.loss(self.layout.unflatten(theta), self.step)
        (grad,) = torch.autograd.grad(losses.sum(), leaf, create_graph=self.second_order)
        if self.second_order:
            return losses, grad
        losses = losses.detach()
        if psi.requires_grad:
            losses = losses + self.layout.per_problem(grad * (psi - leaf.detach())).sum(1)
        return losses, grad

    def advance(self, update: Tensor) -> Tensor:
        """Apply ``update`` to the flat parameters and move to the next step; returns its losses ``[K]``
        (its gradient becomes ``self.grad``)."""
        self.psi = self.psi + update
        self.step += 1
        loss, self.grad = self.loss_and_grad(self.psi)
        return loss

    def rollout(self, steps: int) -> Tensor:
        """The losses ``[steps, K]`` at steps ``0 .. steps - 1`` (the initial one first), the rule applied without
        a meta-graph: what :func:`~learned_optim.meta.evaluation.run_optimizer` measures, for validation.
        A network with ``network.inference_step()`` (as :class:`~learned_optim.CoordinatewiseLSTM` has: the
        optimizer's fused step, its weights fused once for the rollout) runs through it, on one stacked state."""
        losses = [self.initial_loss]
        inference_step = getattr(self.network, "inference_step", None)
        step = inference_step() if inference_step is not None else None
        state = self.state
        if step is not None:  # the LSTM entries stacked, the moments (if any) apart
            lstm_entries = 2 * self.network.num_layers
            stacked, moments = torch.stack(state[:lstm_entries]), (state[lstm_entries:] or (None,))[0]
        for _ in range(steps - 1):
            with torch.no_grad():
                if step is not None:
                    update = step(self.grad, stacked, moments=moments, **self.progress)
                else:
                    update, state = self.network(self.grad, state, **self.progress)
                update = self.controlled(update)
            losses.append(self.advance(update).detach())
        self.state = (*stacked, *state[lstm_entries:]) if step is not None else tuple(state)
        return torch.stack(losses)

    def unroll(self, steps: int) -> tuple[Tensor, Tensor]:
        """Advance ``steps`` steps; returns each problem's differentiable meta-loss ``[K]`` (the sum of its
        steps' objective terms) and the losses ``[steps, K]`` (detached)."""
        meta_loss = torch.zeros(self.layout.problems, dtype=self.psi.dtype, device=self.psi.device)
        losses = []
        for _ in range(steps):
            update, self.state = self.network(self.grad, self.state, **self.progress)
            loss = self.advance(self.controlled(update))
            meta_loss = meta_loss + self.objective(loss, self.initial_loss, self.step, self.horizon)
            losses.append(loss.detach())
        return meta_loss, torch.stack(losses)

    def truncate(self) -> None:
        """Cut the graph: the next unroll starts from the current values with no history."""
        self.psi, self.grad = self.psi.detach(), self.grad.detach()
        self.state = tuple(s.detach() for s in self.state)


def unroll_memory(network: nn.Module, problems: ProblemBatch | Problem, recipe: Recipe, steps: int = 2) -> int:
    """Bytes that backpropagation through one unroll (``recipe.unroll`` steps, at most the horizon) of ``problems``
    keeps for the meta-gradient, measured: the tensors autograd saves over ``steps`` steps and still holds at their
    end (an optimizee's own graph, freed once its gradient is taken, does not count), scaled to the unroll."""
    held: dict[int, list[tuple[weakref.ref, int]]] = {}  # storage address: (packed holder, bytes) of each saving
    # (an address freed and reused by a later storage has several: the one still held counts)

    class Saved:
        def __init__(self, tensor: Tensor) -> None:
            self.tensor = tensor

    def pack(tensor: Tensor) -> Saved:
        saved, storage = Saved(tensor), tensor.untyped_storage()
        held.setdefault(storage.data_ptr(), []).append((weakref.ref(saved), storage.nbytes()))
        return saved

    unroller = Unroller(network, problems, recipe.second_order, recipe.objective, recipe.horizon)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.tensor):
        meta_loss, _ = unroller.unroll(steps)
    kept = sum(max((size for holder, size in savings if holder() is not None), default=0) for savings in held.values())
    del meta_loss
    return kept * min(recipe.unroll, recipe.horizon) // steps


AllReduce = Callable[[Tensor], None]
"""Sums a tensor in place over the processes of a distributed run (identity in a single process)."""


def meta_step(network: nn.Module, meta_optimizer: torch.optim.Optimizer, meta_loss: Tensor,
              clip: float | None, all_reduce: AllReduce | None = None) -> float | None:
    """One meta-step on ``meta_loss`` (this process's share, summed over processes by ``all_reduce``).

    Returns the (summed) meta-loss, or None when it or its gradient is not finite: then nothing changes.
    """
    meta_optimizer.zero_grad(set_to_none=True)
    params = list(network.parameters())
    if meta_loss.requires_grad:
        meta_loss.backward()
    gradient = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    return apply_meta_gradient(network, meta_optimizer, gradient, meta_loss.detach(), clip, all_reduce)


def apply_meta_gradient(network: nn.Module, meta_optimizer: torch.optim.Optimizer, gradient: Tensor,
                        meta_loss: Tensor, clip: float | None, all_reduce: AllReduce | None = None) -> float | None:
    """One meta-step on the flat meta-gradient ``gradient`` (this process's share, summed over processes by
    ``all_reduce`` with ``meta_loss``), its global norm clipped to ``clip``.

    Returns the (summed) meta-loss, or None when it or the gradient is not finite: then nothing changes.
    """
    meta_optimizer.zero_grad(set_to_none=True)
    params = list(network.parameters())
    flat = torch.cat([gradient.reshape(-1), meta_loss.reshape(1).to(gradient)])
    if all_reduce is not None:
        all_reduce(flat)
    loss, grads = float(flat[-1]), flat[:-1]
    norm = torch.linalg.vector_norm(grads)
    if not (math.isfinite(loss) and torch.isfinite(norm)):
        return None
    if clip is not None and norm > clip:
        grads = grads * (clip / norm)
    for p, g in zip(params, grads.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()
    meta_optimizer.step()
    return loss


def train_episode(network: nn.Module, meta_optimizer: torch.optim.Optimizer, problems: ProblemBatch | Problem,
                  recipe: Recipe, scale: Tensor | None = None, total_problems: int | None = None,
                  all_reduce: AllReduce | None = None, generators: list[torch.Generator] | None = None,
                  told_horizon: bool = True) -> dict:
    """One episode of truncated BPTT: ``horizon / unroll`` meta-steps on the mean over the problems.

    In a distributed run each process passes its share of the meta-batch, ``total_problems`` the size of
    the whole meta-batch (default: this batch's) and ``all_reduce`` to sum over processes. ``generators``
    (the problems' own, for estimators that draw noise) are not used. ``told_horizon``: a network with progress
    inputs is told the horizon (else it runs as a user's optimizer without ``total_steps``).

    Returns:
        ``{"meta_loss": mean meta-loss per unroll, "losses": mean loss over the problems per step,
        "skipped": skipped meta-steps}``, all summed over the processes.
    """
    unroller = Unroller(network, problems, recipe.second_order, recipe.objective, recipe.horizon, scale,
                        recipe.horizon if told_horizon else None)
    total = total_problems or unroller.layout.problems
    meta_losses, losses, skipped = [], [], 0
    for start in range(0, recipe.horizon, recipe.unroll):
        meta_loss, unroll_losses = unroller.unroll(min(recipe.unroll, recipe.horizon - start))
        value = meta_step(network, meta_optimizer, meta_loss.sum() / total, recipe.clip, all_reduce)
        skipped += value is None
        meta_losses.append(math.nan if value is None else value)
        losses.append(unroll_losses.sum(1) / total)
        unroller.truncate()
    losses = torch.cat(losses)
    if all_reduce is not None:
        all_reduce(losses)
    return {"meta_loss": sum(meta_losses) / len(meta_losses), "losses": losses.tolist(), "skipped": skipped}
