"""MNIST: the standard IDX ``.gz`` files (found, downloaded md5-verified and atomically, parsed, split) and the
tasks that train models on its minibatches.

The files are looked for, in order, in an explicit ``root`` folder, in the folder named by the
``LEARNED_OPTIM_MNIST`` environment variable, and in the user cache
(``$XDG_CACHE_HOME/learned_optim/mnist``, default ``~/.cache/learned_optim/mnist``), where missing
files are downloaded from the usual public mirrors unless ``download=False``.

Splits: ``train`` = the first 50,000 training images (meta-training), ``validation`` = the last
10,000 training images (model selection), ``test`` = the 10,000 test images (evaluation).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import urllib.request
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..atomic import write_file_atomic
from .modules import ACTIVATIONS, ModuleTask, mlp

ENV_VAR = "LEARNED_OPTIM_MNIST"
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLITS = {"train": ("train", 0, 50_000), "validation": ("train", 50_000, 60_000), "test": ("t10k", 0, 10_000)}
_IDX_DTYPES = {0x08: torch.uint8}


class DataError(RuntimeError):
    """MNIST files are missing, corrupt, or could not be downloaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "learned_optim" / "mnist"


def find_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding the four MNIST files (see the module docstring for the search order)."""
    candidates = [Path(root)] if root is not None else []
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(cache_dir())
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES):
            return folder
    if root is not None or not download:
        looked = ", ".join(str(folder) for folder in candidates)
        raise DataError(
            f"MNIST files {sorted(FILES)} not found in {looked}; put them in one of these folders, "
            f"set {ENV_VAR} to a folder holding them, or allow the download"
        )
    for name in FILES:
        if not (cache_dir() / name).is_file():
            download_file(name, cache_dir())
    return cache_dir()


def download_file(name: str, folder: Path, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """Download ``name`` into ``folder`` from the first mirror that serves it with the right md5."""
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        try:
            with urllib.request.urlopen(mirror + name, timeout=30) as response:
                payload = response.read()
        except OSError as error:
            errors.append(f"{mirror}: {error}")
            continue
        if hashlib.md5(payload).hexdigest() != FILES[name]:
            errors.append(f"{mirror}: md5 mismatch")
            continue
        return write_file_atomic(folder / name, lambda handle: handle.write(payload))
    raise DataError(
        f"could not download MNIST file {name} ({'; '.join(errors)}); "
        f"download it by hand into {folder} or set {ENV_VAR} to a folder holding the MNIST files"
    )


def read_idx(path: str | os.PathLike) -> Tensor:
    """Parse a gzipped IDX file (unsigned-byte data) into a uint8 tensor of the stored shape."""
    path = Path(path)
    fix = f"delete {path} and download it again (or point {ENV_VAR} at a good copy)"
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"MNIST file {path} is corrupt or truncated ({error}); {fix}") from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"MNIST file {path} is not an unsigned-byte IDX file; {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else None
    if shape is None or len(raw) - header != math.prod(shape):
        raise DataError(f"MNIST file {path} has {len(raw)} bytes, which does not match its header; {fix}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


@functools.lru_cache(maxsize=4)
def load_split(split: str, root: str | None = None, download: bool = True) -> tuple[Tensor, Tensor]:
    """``(images [n, 784] float32 in [0, 1], labels [n] int64)`` of an MNIST split."""
    if split not in SPLITS:
        raise ValueError(f"Invalid MNIST split: {split!r}; choose one of {list(SPLITS)}")
    prefix, start, stop = SPLITS[split]
    folder = find_mnist(root, download)
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"MNIST files in {folder} disagree: {images.shape[0]} images, {labels.shape[0]} labels")
    images = images[start:stop]
    return images.reshape(images.shape[0], -1).float().div_(255), labels[start:stop].long()


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
        root (str, optional): folder of the MNIST files (see :mod:`learned_optim.meta.tasks.mnist`).
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
    images, labels = (data.to(device) for data in load_split(split, root))

    def sample_batch(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(images.shape[0], (batch_size,), generator=generator).to(images.device)
        return images[index], labels[index]

    heldout = tuple(data.to(device) for data in load_split(heldout_split, root)) if heldout_split else None
    return ModuleTask(model_factory, sample_batch, heldout=heldout, device=device)
