"""Task families with a sampled architecture per problem, and mixtures of tasks, for a broad meta-training
distribution.

Each problem draws its model's configuration (or, in a :class:`MixtureTask`, its component task) from the
problem's generator, then its initialisation and minibatches as that task does; a meta-batch
(``sample_many``) shares one configuration, drawn from its first generator, so its K models stack and run
together. The exact configurations the evaluation suites test on are never drawn (:data:`HELD_OUT_MLPS`),
so what is evaluated stays out of training.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import Problem, ProblemBatch, Task
from .mnist import mnist_task
from .modules import ACTIVATIONS, ModuleTask, convnet, mlp

PAPER_INIT_STD = 0.01
"""The paper's MNIST initialisation, N(0, 0.01²)."""


@dataclass(frozen=True)
class MLPConfig:
    hidden_sizes: tuple[int, ...]
    activation: str
    init: str  # "paper" (N(0, 0.01²)) or "pytorch" (its default)
    batch_size: int


HELD_OUT_MLPS = frozenset(
    [MLPConfig(hidden_sizes, activation, "paper", 128)
     for hidden_sizes, activation in [((20,), "sigmoid"), ((40,), "sigmoid"), ((20, 20), "sigmoid"), ((20,), "relu")]]
    + [MLPConfig((), activation, "paper", 128) for activation in ACTIVATIONS]  # logistic regression
    + [MLPConfig((20,), "relu", "paper", 32)]
)
"""The mnist-paper panels' and the generalist suite's MLPs and logistic regression (paper init, batch 128; the ReLU
MLP also at batch 32): never drawn."""


def _choice(options: tuple, generator: torch.Generator) -> Any:
    return options[int(torch.randint(len(options), (), generator=generator))]


def _log_uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    u = float(torch.rand((), generator=generator))
    return int(round(math.exp(math.log(low) + u * (math.log(high) - math.log(low)))))


class SampledArchitectureTask(Task):
    """A task whose problems each draw a configuration, then sample from that configuration's task."""

    def __init__(self) -> None:
        self._tasks: dict[Any, Task] = {}

    @abstractmethod
    def config(self, generator: torch.Generator) -> Any:
        """A problem's configuration, drawn from its generator (hashable)."""

    @abstractmethod
    def task(self, config: Any) -> Task:
        """The task of one configuration."""

    def _task_for(self, generator: torch.Generator) -> Task:
        config = self.config(generator)
        if config not in self._tasks:
            self._tasks[config] = self.task(config)
        return self._tasks[config]

    def sample(self, generator: torch.Generator) -> Problem:
        return self._task_for(generator).sample(generator)

    def sample_many(self, generators: list[torch.Generator]) -> ProblemBatch:
        return self._task_for(generators[0]).sample_many(generators)


class MNISTFamily(SampledArchitectureTask):
    """Models of a sampled configuration on MNIST minibatches; ``split``, ``root``, ``heldout_split`` and ``device``
    as :func:`~learned_optim.meta.tasks.mnist_task`'s, the minibatch size the configuration's ``batch_size``."""

    def __init__(self, split: str = "train", root: str | None = None, heldout_split: str | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.split, self.root, self.heldout_split, self.device = split, root, heldout_split, device

    @abstractmethod
    def model(self, config: Any) -> nn.Module:
        """A freshly initialised model of ``config``."""

    def task(self, config: Any) -> ModuleTask:
        return mnist_task(lambda: self.model(config), self.split, config.batch_size, self.root, self.heldout_split,
                          self.device)


class MNISTMLPFamily(MNISTFamily):
    """MLPs on MNIST: depth uniform in ``depths`` (0: logistic regression), each width log-uniform in ``widths``,
    activation, initialisation (the paper's N(0, 0.01²) or PyTorch's default) and minibatch size uniform over their
    options; never one of :data:`HELD_OUT_MLPS`. The data arguments as :class:`MNISTFamily`'s."""

    def __init__(self, split: str = "train", widths: tuple[int, int] = (16, 128), depths: tuple[int, int] = (1, 3),
                 activations: tuple[str, ...] = ("sigmoid", "tanh", "relu", "gelu"),
                 inits: tuple[str, ...] = ("paper", "pytorch"), batch_sizes: tuple[int, ...] = (64, 128, 256),
                 **data: Any) -> None:
        super().__init__(split, **data)
        unknown = set(activations) - set(ACTIVATIONS) or set(inits) - {"paper", "pytorch"}
        if unknown:
            raise ValueError(f"Invalid activations or inits: {sorted(unknown)}; activations are {sorted(ACTIVATIONS)}, "
                             "inits 'paper' and 'pytorch'")
        self.widths, self.depths = widths, depths
        self.activations, self.inits, self.batch_sizes = tuple(activations), tuple(inits), tuple(batch_sizes)

    def config(self, generator: torch.Generator) -> MLPConfig:
        while True:
            depth = int(torch.randint(self.depths[0], self.depths[1] + 1, (), generator=generator))
            config = MLPConfig(tuple(_log_uniform_int(*self.widths, generator) for _ in range(depth)),
                               _choice(self.activations, generator), _choice(self.inits, generator),
                               _choice(self.batch_sizes, generator))
            if config not in HELD_OUT_MLPS:
                return config

    def model(self, config: MLPConfig) -> nn.Module:
        init_std = PAPER_INIT_STD if config.init == "paper" else None
        return mlp(784, config.hidden_sizes, 10, config.activation, init_std)


@dataclass(frozen=True)
class ConvNetConfig:
    channels: int
    num_convs: int
    kernel_size: int
    batch_norm: bool
    batch_size: int


HELD_OUT_CONVNET = ConvNetConfig(16, 3, 5, True, 128)
"""The paper's CIFAR ConvNet at batch 128, which the generalist suite tests on: never drawn."""


class MNISTConvNetFamily(MNISTFamily):
    """Small ConvNets on MNIST (:func:`~learned_optim.meta.tasks.convnet`): 1-3 conv + pool layers of 8-32 channels
    (log-uniform), 3×3 or 5×5 kernels, with or without batch norm (batch statistics, no running ones), 32 hidden
    units; minibatch size uniform over ``batch_sizes``. Includes architectures like the paper's CIFAR ConvNet, never
    exactly it (:data:`HELD_OUT_CONVNET`). The data arguments as :class:`MNISTFamily`'s."""

    def __init__(self, split: str = "train", channels: tuple[int, int] = (8, 32),
                 batch_sizes: tuple[int, ...] = (64, 128), **data: Any) -> None:
        super().__init__(split, **data)
        self.channels, self.batch_sizes = channels, tuple(batch_sizes)

    def config(self, generator: torch.Generator) -> ConvNetConfig:
        while True:
            config = ConvNetConfig(_log_uniform_int(*self.channels, generator),
                                   int(torch.randint(1, 4, (), generator=generator)), _choice((3, 5), generator),
                                   _choice((True, False), generator), _choice(self.batch_sizes, generator))
            if config != HELD_OUT_CONVNET:
                return config

    def model(self, config: ConvNetConfig) -> nn.Module:
        return convnet(config.channels, config.num_convs, config.kernel_size, batch_norm=config.batch_norm)


class MixtureTask(SampledArchitectureTask):
    """Problems from several tasks: each problem (each meta-batch) comes from task ``i`` with probability
    ``weight_i / sum(weights)``.

    Args:
        components (list of (Task, float)): the tasks and their positive weights.
    """

    def __init__(self, components: list[tuple[Task, float]]) -> None:
        super().__init__()
        if not components or any(weight <= 0 for _, weight in components):
            raise ValueError("a mixture needs at least one task and positive weights, "
                             f"got {[w for _, w in components]}")
        self.components = [task for task, _ in components]
        self.weights = torch.tensor([float(weight) for _, weight in components], dtype=torch.float64)

    def config(self, generator: torch.Generator) -> int:
        return int(torch.multinomial(self.weights, 1, generator=generator))

    def task(self, config: int) -> Task:
        return self.components[config]
