"""Gradient encodings fed to the coordinatewise LSTM (Andrychowicz et al., 2016, appendix A).

Each function maps a flat gradient ``x`` of shape ``[N]`` to features of shape ``[N, F]``.
They are pure, work in the dtype they are given and return finite features for finite input.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def log_sign(x: Tensor, p: float = 10.0) -> Tensor:
    r"""The paper's two-feature encoding of gradient magnitude and sign.

    .. math::
        x \mapsto \begin{cases}
            \left(\frac{\log |x|}{p},\ \operatorname{sign}(x)\right) & |x| \ge e^{-p} \\
            \left(-1,\ e^{p} x\right) & \text{otherwise}
        \end{cases}

    computed in the equivalent clamped form
    :math:`\left(\log\max(|x|, e^{-p}) / p,\ \operatorname{clamp}(e^{p} x, -1, 1)\right)`,
    which has no ``log 0`` and no overflow to ``inf``/``nan`` for finite ``x``.

    Args:
        x (Tensor): flat gradient, shape ``[N]``.
        p (float, optional): the constant :math:`p > 0` (default: 10.0).

    Returns:
        Tensor of shape ``[N, 2]``.

    Example:
        >>> log_sign(torch.tensor([0.0, 1e-8, -1.0]), p=10.0)
        tensor([[-1.0000,  0.0000],
                [-1.0000,  0.0002],
                [ 0.0000, -1.0000]])
    """
    if p <= 0:
        raise ValueError(f"Invalid log_sign constant p: {p}; it must be positive")
    magnitude = x.abs().clamp(min=math.exp(-p)).log() / p
    direction = (x * math.exp(p)).clamp(-1.0, 1.0)
    return torch.stack((magnitude, direction), dim=-1)


def identity(x: Tensor, p: float = 10.0) -> Tensor:
    """The raw gradient as a single feature, shape ``[N, 1]`` (``p`` is ignored)."""
    return x.unsqueeze(-1)


PREPROCESSINGS: dict[str, tuple[Callable[[Tensor, float], Tensor], int]] = {
    "log_sign": (log_sign, 2),
    "none": (identity, 1),
}
"""Encoding name -> (function, number of features)."""
