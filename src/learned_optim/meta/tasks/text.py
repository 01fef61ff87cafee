r"""Character-level language models on Python source: small causal Transformers trained to predict the next byte.

The text is the bundled corpus of CPython standard-library modules (``corpus/``, PSF licence), split by position:
``train`` the first 80%, ``validation`` the next 10%, ``test`` the last 10%. A minibatch is ``batch_size`` windows
of ``context + 1`` bytes at random offsets; the loss is the mean cross-entropy of each next byte given the ones
before it in its window (:math:`\log 128 \approx 4.85` for a uniform guess over ASCII).
"""

from __future__ import annotations

import functools
import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Task
from .families import SampledArchitectureTask, _choice, _log_uniform_int
from .modules import ModuleTask

CORPUS = Path(__file__).parent / "corpus" / "python-stdlib.txt.gz"
VOCABULARY = 128
"""Bytes of ASCII text."""
SPLITS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


@functools.lru_cache(maxsize=None)
def load_text(split: str) -> Tensor:
    """The bytes of ``split`` of the corpus, ``[L]`` int64."""
    if split not in SPLITS:
        raise ValueError(f"Invalid split: {split!r}; choose one of {list(SPLITS)}")
    data = torch.frombuffer(bytearray(gzip.decompress(CORPUS.read_bytes())), dtype=torch.uint8).long()
    start, end = (int(fraction * data.numel()) for fraction in SPLITS[split])
    return data[start:end]


class CausalSelfAttention(nn.Module):
    r"""Multi-head self-attention in which position :math:`t` sees positions :math:`\le t` (written with plain
    tensor operations, so ``torch.func.vmap`` runs many models at once)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, time, width = x.shape
        q, k, v = (t.reshape(batch, time, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        future = torch.ones(time, time, dtype=torch.bool, device=x.device).triu(1)
        attended = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        return self.out(attended.transpose(1, 2).reshape(batch, time, width))


class Block(nn.Module):
    """A pre-norm Transformer block: attention, then a GELU MLP of 4x the width, each added to its input."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """A byte-level causal Transformer: ``[B, T]`` bytes to ``[B * T, 128]`` next-byte logits."""

    def __init__(self, context: int = 32, width: int = 32, layers: int = 1, heads: int = 2) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"Invalid width {width} for {heads} heads; it must be a multiple of the heads")
        self.embedding = nn.Embedding(VOCABULARY, width)
        self.position = nn.Parameter(torch.randn(context, width) * 0.02)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, VOCABULARY)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.blocks(self.embedding(tokens) + self.position[:tokens.shape[1]])
        return self.head(self.norm(x)).reshape(-1, VOCABULARY)


@dataclass(frozen=True)
class LanguageModelConfig:
    width: int
    layers: int
    context: int
    batch_size: int


def text_lm_task(config: LanguageModelConfig = LanguageModelConfig(32, 1, 32, 32), split: str = "train",
                 device: torch.device | str | None = None) -> ModuleTask:
    """A :class:`CharTransformer` of ``config`` (2 heads) on minibatches of ``split`` of the corpus."""
    text = load_text(split).to(device)
    offsets = torch.arange(config.context + 1, device=device)

    def sample_batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        starts = torch.randint(text.numel() - config.context - 1, (config.batch_size, 1), generator=generator)
        windows = text[starts.to(text.device) + offsets]
        return windows[:, :-1], windows[:, 1:].reshape(-1)

    return ModuleTask(lambda: CharTransformer(config.context, config.width, config.layers), sample_batch,
                      F.cross_entropy, device=device)


HELD_OUT_LANGUAGE_MODEL = LanguageModelConfig(32, 1, 32, 32)
"""The generalist suite's language model: never drawn."""


class TextLMFamily(SampledArchitectureTask):
    """Character-level Transformers on Python source: width log-uniform in ``widths`` (even), 1-2 blocks, a
    context of 16-64 bytes and a minibatch size from ``batch_sizes``; never :data:`HELD_OUT_LANGUAGE_MODEL`."""

    def __init__(self, split: str = "train", widths: tuple[int, int] = (16, 64),
                 batch_sizes: tuple[int, ...] = (16, 32, 64), device: torch.device | str | None = None) -> None:
        super().__init__()
        self.split, self.widths, self.batch_sizes, self.device = split, widths, tuple(batch_sizes), device

    def config(self, generator: torch.Generator) -> LanguageModelConfig:
        while True:
            config = LanguageModelConfig(2 * max(1, _log_uniform_int(*self.widths, generator) // 2),
                                         int(torch.randint(1, 3, (), generator=generator)),
                                         _choice((16, 32, 64), generator), _choice(self.batch_sizes, generator))
            if config != HELD_OUT_LANGUAGE_MODEL:
                return config

    def task(self, config: LanguageModelConfig) -> Task:
        return text_lm_task(config, self.split, self.device)
