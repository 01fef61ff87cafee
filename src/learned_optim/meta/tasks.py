r"""Tasks: families of optimization problems that meta-training is written against.

A :class:`Task` samples :class:`Problem` instances from a ``torch.Generator``. A problem gives
initial parameters :math:`\theta_0` (a dict of tensors) and a differentiable loss
:math:`f(\theta, t)` of those parameters at step :math:`t` (so minibatches can change per step;
the same ``t`` always gives the same minibatch).

Meta-training runs ``K`` problems of one task together as a :class:`ProblemBatch`: every
parameter stacked along a leading dimension of size ``K`` and one loss call returning the ``K``
losses. :meth:`Task.sample_many` stacks ``K`` problems drawn from ``K`` generators, so problem
``k`` of a batch is exactly the problem :meth:`Task.sample` draws from the ``k``-th generator;
:class:`ModuleTask` evaluates the ``K`` models in one call with ``torch.func.vmap``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

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


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator))


class SimpleTask(Task):
    r""":math:`f(x) = x^2` from :math:`x_0 = 1` (the authors' deterministic test problem)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device

    def sample(self, generator: torch.Generator) -> Problem:
        return Problem({"x": torch.ones((), device=self.device)}, lambda params, step: params["x"] ** 2)


class QuadraticTask(Task):
    r"""Random quadratics :math:`f(\theta) = \sum_k \lVert W_k \theta_k - y_k \rVert^2`.

    :math:`W_k \in \mathbb{R}^{d \times d}`, :math:`y_k` and :math:`\theta_{k,0}` have i.i.d.
    :math:`\mathcal{N}(0, 1)` entries. ``num_functions`` independent functions are optimized at
    once for speed; their losses are summed, so each function's gradient is exactly its own.

    Args:
        dim (int, optional): :math:`d` (default: 10).
        num_functions (int, optional): independent functions per problem (default: 1).
        device (torch.device, optional): where the problems live (default: CPU); drawn on the CPU either way.
    """

    def __init__(self, dim: int = 10, num_functions: int = 1, device: torch.device | str | None = None) -> None:
        self.dim = dim
        self.num_functions = num_functions
        self.device = device

    def sample(self, generator: torch.Generator) -> Problem:
        k, d = self.num_functions, self.dim
        W = torch.randn(k, d, d, generator=generator).to(self.device)
        y = torch.randn(k, d, generator=generator).to(self.device)
        theta = torch.randn(k, d, generator=generator).to(self.device)

        def loss(params: Params, step: int) -> Tensor:
            residual = torch.einsum("kij,kj->ki", W, params["theta"]) - y
            return residual.pow(2).sum()

        return Problem({"theta": theta}, loss)


class ModuleTask(Task):
    """Train an ``nn.Module`` on minibatches: any model family, evaluated with ``functional_call``.

    Args:
        model_factory (Callable[[], nn.Module]): builds a freshly initialised model; it is called
            under a seed drawn from the problem's generator, so initialisation is reproducible.
        sample_batch (Callable[[torch.Generator], tuple]): draws one minibatch ``(inputs, targets)``.
        loss_fn (Callable, optional): ``loss_fn(model(inputs), targets)`` (default: cross-entropy).
        heldout (tuple, optional): ``(inputs, targets)`` for the problem's held-out loss, evaluated
            in one batch (default: None).
        device (torch.device, optional): where the models live (default: CPU); ``sample_batch`` should
            return minibatches there (default: None).

    Example:
        >>> task = ModuleTask(lambda: nn.Linear(3, 2),
        ...                   lambda g: (torch.randn(8, 3, generator=g), torch.randint(2, (8,), generator=g)))
        >>> problem = task.sample(torch.Generator().manual_seed(0))
        >>> problem.loss(problem.params, step=0).shape
        torch.Size([])
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        sample_batch: Callable[[torch.Generator], tuple[Tensor, Tensor]],
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        heldout: tuple[Tensor, Tensor] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.model_factory = model_factory
        self.sample_batch = sample_batch
        self.loss_fn = loss_fn
        self.heldout = heldout
        self.device = device

    def _draw(self, generator: torch.Generator) -> tuple[nn.Module, int]:
        """A problem's draws: a fresh model (initialised under a seed drawn from ``generator``), then the seed of
        its minibatches."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_draw_seed(generator))
            model = self.model_factory().to(self.device)
        return model, _draw_seed(generator)

    def sample(self, generator: torch.Generator) -> Problem:
        model, batch_seed = self._draw(generator)
        params = {name: p.detach().clone() for name, p in model.named_parameters()}

        def loss(params: Params, step: int) -> Tensor:
            inputs, targets = self.sample_batch(seeded(batch_seed + step))
            return self.loss_fn(functional_call(model, params, (inputs,)), targets)

        def heldout_loss(params: Params) -> Tensor:
            inputs, targets = self.heldout
            return self.loss_fn(functional_call(model, params, (inputs,)), targets)

        return Problem(params, loss, heldout_loss if self.heldout is not None else None)

    def sample_many(self, generators: list[torch.Generator]) -> ProblemBatch:
        """``K`` models stacked; one ``vmap``-ed ``functional_call`` evaluates all of them on their own minibatches.
        Buffers are stacked too, so each model keeps its own (batch norm updates its running statistics in place,
        model by model, as when a model is trained alone)."""
        models, batch_seeds = zip(*(self._draw(generator) for generator in generators))
        template = models[0]
        params, buffers = ({name: torch.stack([dict(named(model))[name].detach() for model in models])
                            for name, _ in named(template)}
                           for named in (nn.Module.named_parameters, nn.Module.named_buffers))

        def one(params: Params, buffers: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
            return self.loss_fn(functional_call(template, {**params, **buffers}, (inputs,)), targets)

        batched = vmap(one)

        def loss(params: Params, step: int) -> Tensor:
            inputs, targets = zip(*(self.sample_batch(seeded(seed + step)) for seed in batch_seeds))
            return batched(params, buffers, torch.stack(inputs), torch.stack(targets))

        return ProblemBatch(params, loss)


ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def mlp(in_features: int, hidden_sizes: tuple[int, ...], out_features: int, activation: str,
        init_std: float | None) -> nn.Module:
    """An MLP with every weight and bias drawn from :math:`\\mathcal{N}(0, \\text{init\\_std}^2)` (None: PyTorch's
    default initialisation)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    sizes = [in_features, *hidden_sizes, out_features]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        if i > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(fan_in, fan_out))
    model = nn.Sequential(*layers)
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, init_std)
    return model


def convnet(channels: int = 16, num_convs: int = 3, kernel_size: int = 5, hidden: int = 32,
            batch_norm: bool = True) -> nn.Module:
    """A ConvNet for flat ``[B, 784]`` MNIST images: ``num_convs`` (1-3) ``kernel_size`` convolutions of ``channels``
    channels, each followed by batch norm (if ``batch_norm``), ReLU and 2×2 max-pooling, then ``hidden`` fully
    connected ReLU units and 10 outputs; PyTorch's default initialisation."""
    if not 1 <= num_convs <= 3:
        raise ValueError(f"Invalid num_convs: {num_convs}; 28x28 images allow 1 to 3 conv + pool layers")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))]
    for in_channels in [1] + [channels] * (num_convs - 1):
        layers.append(nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    side = 28 // 2**num_convs
    layers += [nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    return nn.Sequential(*layers)


def paper_convnet() -> nn.Module:
    """The paper's CIFAR-10 ConvNet for 28×28 grey images: three 5×5 convolutions of 16 channels, each followed by
    batch norm, ReLU and 2×2 max-pooling, then a fully connected layer of 32 ReLU units and 10 outputs (18,314
    parameters, PyTorch's default initialisation)."""
    return convnet()


def mnist_mlp_task(
    hidden_sizes: tuple[int, ...] = (20,),
    activation: str = "sigmoid",
    split: str = "train",
    batch_size: int = 128,
    init_std: float = 0.01,
    root: str | None = None,
    heldout_split: str | None = None,
    device: torch.device | str | None = None,
) -> ModuleTask:
    """MLPs on MNIST minibatches with cross-entropy (the paper's MNIST experiment).

    Args:
        hidden_sizes (tuple[int, ...], optional): hidden layer widths (default: ``(20,)``).
        activation (str, optional): ``"sigmoid"``, ``"relu"`` or ``"tanh"`` (default: ``"sigmoid"``).
        split (str, optional): images the minibatches come from, ``"train"`` (first 50k training
            images), ``"validation"`` (last 10k) or ``"test"`` (default: ``"train"``).
        batch_size (int, optional): minibatch size (default: 128).
        init_std (float, optional): std of the Gaussian initialisation (default: 0.01).
        root (str, optional): folder of the MNIST files (see :mod:`learned_optim.meta.data`).
        heldout_split (str, optional): split of each problem's held-out loss (default: None, no held-out loss).
        device (torch.device, optional): where the images and models live (default: CPU).
    """
    if activation not in ACTIVATIONS:  # fail now, not at the first sample
        raise ValueError(f"Invalid activation: {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    return mnist_task(lambda: mlp(784, hidden_sizes, 10, activation, init_std), split, batch_size, root, heldout_split,
                      device)


def mnist_task(
    model_factory: Callable[[], nn.Module],
    split: str = "train",
    batch_size: int = 128,
    root: str | None = None,
    heldout_split: str | None = None,
    device: torch.device | str | None = None,
) -> ModuleTask:
    """Models from ``model_factory`` (taking flat ``[B, 784]`` images) on MNIST minibatches with cross-entropy,
    e.g. ``mnist_task(paper_convnet)``; the other arguments as :func:`mnist_mlp_task`'s."""
    from .data import load_split

    images, labels = (data.to(device) for data in load_split(split, root))

    def sample_batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(images.shape[0], (batch_size,), generator=generator).to(images.device)
        return images[index], labels[index]

    heldout = tuple(data.to(device) for data in load_split(heldout_split, root)) if heldout_split else None
    return ModuleTask(model_factory, sample_batch, heldout=heldout, device=device)
