"""Gradient estimators: how one episode of problems becomes meta-steps on the network's weights.

Every estimator takes ``(network, meta_optimizer, problems, recipe, scale, total_problems, all_reduce, generators,
told_horizon)`` (``generators[k]``: problem ``k``'s own, for noise; ``told_horizon``: whether a network with progress
inputs is told the episode's horizon) and
returns ``{"meta_loss": float, "losses": [mean loss per step], "skipped": meta-steps skipped}``, as
:func:`~learned_optim.meta.truncated.train_episode` documents; the training loop picks one per episode by name
(the name is logged with the episode).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from .imitation import imitation_episode
from .pes import pes_episode
from .tasks import Problem, ProblemBatch
from .truncated import AllReduce, Recipe, train_episode


class Estimator(Protocol):
    """One episode of meta-training (see the module docstring)."""

    def __call__(self, network: nn.Module, meta_optimizer: torch.optim.Optimizer, problems: ProblemBatch | Problem,
                 recipe: Recipe, scale: Tensor | None = None, total_problems: int | None = None,
                 all_reduce: AllReduce | None = None, generators: list[torch.Generator] | None = None,
                 told_horizon: bool = True) -> dict: ...


ESTIMATORS: dict[str, Estimator] = {
    "bptt": train_episode,  # truncated backpropagation through time (the paper)
    "pes": pes_episode,  # persistent evolution strategies (Vicol et al., 2021), forward passes only
    "imitation": imitation_episode,  # imitation of a tuned Adam (Chen et al., 2020)
}
"""The estimators by the name the log records."""
