"""Problems that train an ``nn.Module`` on minibatches, and the models the built-in tasks train."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .base import Params, Problem, ProblemBatch, Task, draw_seed, seeded


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
            torch.manual_seed(draw_seed(generator))
            model = self.model_factory().to(self.device)
        return model, draw_seed(generator)

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
