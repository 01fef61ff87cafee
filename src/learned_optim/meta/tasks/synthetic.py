"""Synthetic problems: the authors' test problem and the paper's random quadratics."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Params, Problem, Task


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
