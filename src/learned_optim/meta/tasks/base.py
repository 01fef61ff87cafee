"""What every task is written against: problems, batches of problems, tasks, and the generators that draw them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]


@dataclass
class Problem:
    """One optimizee: initial parameters, the loss ``loss(params, step)`` and, optionally, a held-out
    loss ``heldout_loss(params)`` (e.g. the test-set loss of a trained model)."""

    params: Params
    loss: Callable[[Params, int], Tensor]
    heldout_loss: Callable[[Params], Tensor] | None = None


@dataclass
class ProblemBatch:
    """``K`` problems of one architecture: ``params[name]`` is ``[K, *shape]`` and
    ``loss(params, step)`` returns the ``K`` losses ``[K]``, problem ``k``'s depending only on ``params[name][k]``."""

    params: Params
    loss: Callable[[Params, int], Tensor]


def stack_problems(problems: list[Problem]) -> ProblemBatch:
    """The problems as one :class:`ProblemBatch` (they must have the same parameter names and shapes);
    the loss is evaluated problem by problem."""
    names = list(problems[0].params)
    shapes = [{name: p.shape for name, p in problem.params.items()} for problem in problems]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError("a problem batch needs problems with the same parameter names and shapes")
    params = {name: torch.stack([problem.params[name] for problem in problems]) for name in names}

    def loss(params: Params, step: int) -> Tensor:
        return torch.stack([problem.loss({name: value[k] for name, value in params.items()}, step)
                            for k, problem in enumerate(problems)])

    return ProblemBatch(params, loss)


class Task(ABC):
    """A family of problems (learned_optimization's "task family")."""

    @abstractmethod
    def sample(self, generator: torch.Generator) -> Problem:
        """A fresh problem drawn with ``generator``."""

    def sample_many(self, generators: list[torch.Generator]) -> ProblemBatch:
        """Problem ``k`` drawn with ``generators[k]``, all stacked (override to evaluate them in one call)."""
        return stack_problems([self.sample(generator) for generator in generators])


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator))
