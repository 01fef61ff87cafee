"""Prototype (not shipped): step-scale control that shrinks the scale ``k`` times faster than it grows.

The shipped controller (:mod:`learned_optim.control`) moves the log scale by ``-rate * m / sqrt(v)``; this one by
``-k * rate * m / sqrt(v)`` where that step shrinks the scale (``m > 0``: the last update overshot), as Rprop and the
"bold driver" shrink faster than they grow. It runs ``benchmarks/compare_networks.py`` with the controller replaced;
variants are told apart by their exact ``scale_rate``, each mapped to its ``k`` (a rate not named keeps ``k = 1``):

    python research/prototypes/asymmetric_control.py --shrink 0.0100002=3 0.0100003=10 -- \\
        --networks l2o-generalist-2 l2o-generalist-2+scale_rate=0.0100002 l2o-generalist-2+scale_rate=0.0100003 \\
        --panels mnist-2x20-sigmoid-100 --problems 20

Findings: research/step-size.md ("A controller that shrinks faster than it grows").
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

import learned_optim.optimizer
from learned_optim import control

SHRINK: dict[float, float] = {}


def asymmetric_control_step(state: torch.Tensor, terms: torch.Tensor, rate: float) -> torch.Tensor:
    """:func:`learned_optim.control.control_step` with the shrinking steps ``SHRINK[rate]`` times longer (the moments
    do not depend on the rate, so a shrinking row takes the step at ``k * rate``)."""
    grown = control.control_step(state, terms, rate)
    shrunk = control.control_step(state, terms, SHRINK.get(rate, 1.0) * rate)
    return torch.where(grown[..., :1] < state[..., :1], shrunk, grown)


if __name__ == "__main__":
    split = sys.argv.index("--")
    for pair in sys.argv[2:split]:  # after --shrink
        rate, k = pair.split("=")
        SHRINK[float(rate)] = float(k)
    learned_optim.optimizer.control_step = asymmetric_control_step
    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    sys.argv = ["compare_networks.py", *sys.argv[split + 1:]]
    runpy.run_path(str(benchmarks / "compare_networks.py"), run_name="__main__")
