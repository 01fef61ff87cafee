"""Atomic writes: a crash leaves the old file or folder or the new one, never a half-written one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable


def write_file_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Let ``write`` fill a temporary file next to ``path``, then rename it over ``path``."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        try:
            write(handle)
        except BaseException:
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o644)  # temporary files are private; ours are ordinary files
    os.replace(handle.name, path)
    return path


def write_folder_atomic(folder: Path, fill: Callable[[Path], object]) -> Path:
    """Let ``fill`` write a temporary sibling folder, then swap it in for ``folder``.

    At worst a crash leaves a stray ``.name.*`` folder (the new one unfinished, or the old one
    moved aside just before the swap) next to the intact old or new ``folder``.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging)
        raise
    staging.chmod(0o755)
    for path in staging.iterdir():
        path.chmod(0o644)
    old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old.")) if folder.exists() else None
    if old is not None:
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old)
    return folder
