r"""Generated style images and the colour variants of style images, drawn from a ``torch.Generator``.

Every function returns an RGB image ``[3, side, side]`` in [0, 1] and draws all its randomness from the generator,
so a seed names an image. With :math:`(y, x)` pixel coordinates, :math:`d = (\cos\phi, \sin\phi)` a random direction
and :math:`P` a random period:

* :func:`stripes`: colours :math:`c_0, c_1` mixed by :math:`t = \tfrac12 (1 + \sin(2\pi \langle (y, x), d \rangle / P
  + \varphi))`, or by :math:`t = [\sin(\cdot) > 0]` for hard edges;
* :func:`checks`: the product of the signs of two such waves along :math:`d` and :math:`d^\perp`;
* :func:`noise`: :math:`\sum_o 2^{-o} U_o`, with :math:`U_o` a uniform random grid of :math:`c\, 2^o` cells a side
  upsampled bicubically (multi-scale value noise), per channel or one field between two colours;
* :func:`mosaic`: Voronoi cells of random points, each a random colour, with dark borders where the two nearest
  points are almost equally near (a stained-glass pattern).

Meta-training draws stripes, checks and noise (:data:`TRAINING_TEXTURES`); the mosaic's generator is kept for
evaluation only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SIDE = 256
"""The side of a generated image in pixels (tasks crop and resize it)."""


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _log_uniform(generator: torch.Generator, low: float, high: float) -> float:
    return math.exp(_uniform(generator, math.log(low), math.log(high)))


def _coordinates(side: int) -> tuple[Tensor, Tensor]:
    axis = torch.arange(side, dtype=torch.float32)
    return torch.meshgrid(axis, axis, indexing="ij")


def _wave(generator: torch.Generator, side: int, angle: float) -> Tensor:
    """:math:`\\sin(2\\pi \\langle (y, x), d \\rangle / P + \\varphi)` with :math:`P` log-uniform in 4-64 pixels."""
    y, x = _coordinates(side)
    period, phase = _log_uniform(generator, 4, 64), _uniform(generator, 0, 2 * math.pi)
    return torch.sin(2 * math.pi * (y * math.cos(angle) + x * math.sin(angle)) / period + phase)


def _blend(generator: torch.Generator, t: Tensor) -> Tensor:
    """Two random colours mixed by ``t`` in [0, 1]: ``[3, H, W]``."""
    colours = torch.rand(2, 3, 1, 1, generator=generator)
    return colours[0] * (1 - t) + colours[1] * t


def stripes(generator: torch.Generator, side: int = SIDE) -> Tensor:
    """Straight stripes of two colours at a random angle and period, soft or hard-edged."""
    wave = _wave(generator, side, _uniform(generator, 0, math.pi))
    hard = _uniform(generator) < 0.5
    return _blend(generator, (wave > 0).float() if hard else (1 + wave) / 2)


def checks(generator: torch.Generator, side: int = SIDE) -> Tensor:
    """A checkerboard of two colours, rotated at random, its two periods drawn apart."""
    angle = _uniform(generator, 0, math.pi / 2)
    across, along = _wave(generator, side, angle), _wave(generator, side, angle + math.pi / 2)
    return _blend(generator, ((across > 0) ^ (along > 0)).float())


def noise(generator: torch.Generator, side: int = SIDE) -> Tensor:
    """Multi-scale value noise: coarsest grid of 2-32 cells a side, 1-4 octaves, coloured per channel or between two
    colours."""
    cells, octaves = round(_log_uniform(generator, 2, 32)), int(torch.randint(1, 5, (), generator=generator))
    coloured = _uniform(generator) < 0.5
    channels = 3 if coloured else 1
    field = torch.zeros(1, channels, side, side)
    for octave in range(octaves):
        grid = torch.rand(1, channels, cells * 2 ** octave, cells * 2 ** octave, generator=generator)
        field += 0.5 ** octave * F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    low, high = field.amin(dim=(2, 3), keepdim=True), field.amax(dim=(2, 3), keepdim=True)
    t = ((field - low) / (high - low).clamp_min(1e-6))[0]
    return t if coloured else _blend(generator, t)


def mosaic(generator: torch.Generator, side: int = SIDE) -> Tensor:
    """Voronoi cells of 24-96 random points, each a random colour, with dark borders 2 pixels wide."""
    points = int(torch.randint(24, 97, (), generator=generator))
    centres = torch.rand(points, 2, generator=generator) * side
    colours = torch.rand(points, 3, generator=generator)
    y, x = _coordinates(side)
    distances = torch.cdist(torch.stack([y.flatten(), x.flatten()], 1), centres)  # [side², points]
    nearest = distances.topk(2, dim=1, largest=False)
    image = colours[nearest.indices[:, 0]].t().reshape(3, side, side)
    border = (nearest.values[:, 1] - nearest.values[:, 0] < 2).reshape(1, side, side)
    return torch.where(border, torch.full_like(image, 0.1), image)


TRAINING_TEXTURES = {"stripes": stripes, "checks": checks, "noise": noise}
"""The generated families that meta-training draws."""


def colour_variant(image: Tensor, generator: torch.Generator) -> Tensor:
    """``image`` with its channels permuted at random, its saturation scaled by U(0, 1.5), its contrast by
    exp(U(-0.7, 0.7)) about its mean and its brightness shifted by U(-0.15, 0.15), clamped to [0, 1]."""
    image = image[torch.randperm(3, generator=generator)]
    grey = image.mean(0, keepdim=True)
    image = grey + _uniform(generator, 0, 1.5) * (image - grey)
    mean = image.mean()
    image = mean + math.exp(_uniform(generator, -0.7, 0.7)) * (image - mean)
    return (image + _uniform(generator, -0.15, 0.15)).clamp(0, 1)
