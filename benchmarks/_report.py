"""What a benchmark prints, also written to the docs file it backs: ``--out FILE`` (markdown), headed by the
command that made it, the machine, torch's version and the date, and written only when the run completes."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from learned_optim.meta.atomic import write_file_atomic
from learned_optim.meta.train import describe_hardware

_out: list[str] = []  # the --out file of this run, once parse_args has seen it


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser.parse_args()`` with the ``--out FILE`` option added."""
    parser.add_argument("--out", help="also write the output, headed by the command, machine and date, to this "
                                      "markdown file (the docs quote such files)")
    args = parser.parse_args()
    if args.out:
        _out.append(args.out)
    return args


def run(main: Callable[[], None], device: str = "cpu") -> None:
    """Run a benchmark's ``main`` (which calls :func:`parse_args`), copying its output to ``--out`` if given."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        main()
    if _out:
        command = shlex.join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
        header = (f"Written by `{command}` on {describe_hardware(device)}, "
                  f"{datetime.date.today().isoformat()}.\n\n")
        path = Path(_out[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, lambda handle: handle.write((header + captured.getvalue()).encode()))


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()
