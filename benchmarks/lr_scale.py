"""What ``lr`` does to a learned optimizer: the update multiplier on evaluation panels.

    python benchmarks/lr_scale.py [--checkpoint l2l-mnist] [--suite mnist-paper]
        [--panels mnist-20-sigmoid-100 mnist-20-relu-100] [--split test] [--problems 10]
        [--multipliers 0.25 0.5 1 2 4] [--steps N]

``LearnedOptimizer`` applies ``lr`` times the network's update, so ``lr=1`` is the rule exactly as
meta-trained (and ``lr=s`` is the network of ``CoordinatewiseLSTM.with_step_scale(s)``); this runs each
multiplier on the same problems of each panel (those ``evaluate`` draws for the split: common random numbers)
and prints the mean loss over the last 10 steps, the sum of losses and, for each multiplier, the mean
per-problem difference of the final loss from ``lr=1`` with its standard error. ``--split validation`` is
for choosing a step scale (``train --init-step-scale``); the test split is for reports.
Needs the panels' data (MNIST, or the art folder for neural-art).
"""

from __future__ import annotations

import argparse
import math
import statistics

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.metrics import METRICS
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import SUITES, suite_panels
from learned_optim.meta.tasks import seeded

import _report as report  # benchmarks/_report.py, beside this script

MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="l2l-mnist")
    parser.add_argument("--suite", choices=list(SUITES), default="mnist-paper")
    parser.add_argument("--panels", nargs="+", default=["mnist-20-sigmoid-100", "mnist-20-relu-100"])
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--multipliers", type=float, nargs="+", default=MULTIPLIERS)
    parser.add_argument("--steps", type=int, help="steps per run (default: each panel's)")
    args = report.parse_args(parser)
    if args.problems < 1 or (args.steps is not None and args.steps < 1):
        parser.error(f"--problems and --steps must be at least 1, got {args.problems} and {args.steps}")
    if not all(math.isfinite(m) and m > 0 for m in args.multipliers):
        parser.error(f"--multipliers must be finite and > 0, got {args.multipliers}")
    network = pretrained.load(args.checkpoint)
    panels = suite_panels(args.suite, DEFAULTS[SUITES[args.suite][0]]["task"])
    unknown = sorted(set(args.panels) - set(panels))
    if unknown:
        parser.error(f"unknown panels {unknown} of suite {args.suite}; choose from {sorted(panels)}")
    multipliers = sorted(set(args.multipliers) | {1.0})
    print(f"{args.checkpoint}, {args.problems} problems of the {args.split} split per panel")
    print("| panel | lr | final (mean of last 10) | sum | final - final at lr 1 (paired) |")
    print("|---|---|---|---|---|")
    for name in args.panels:
        spec, steps, _, _ = panels[name]
        steps = args.steps or steps
        task = make_task(spec, args.split)
        problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
        finals, sums = {}, {}
        for lr in multipliers:
            runs = [run_optimizer(p, lambda params: LearnedOptimizer(params, network, lr=lr), steps).losses
                    for p in problems]
            finals[lr], sums[lr] = [METRICS["final"](r) for r in runs], [sum(r) for r in runs]
        for lr in multipliers:
            differences = [a - b for a, b in zip(finals[lr], finals[1.0])]
            paired = "–"
            if lr != 1.0 and len(differences) > 1:
                stderr = statistics.stdev(differences) / len(differences) ** 0.5
                paired = f"{statistics.mean(differences):+.4f} ± {stderr:.4f}"
            final, total = statistics.mean(finals[lr]), statistics.mean(sums[lr])
            print(f"| {name} | {lr:g} | {final:.4f} | {total:.1f} | {paired} |", flush=True)


if __name__ == "__main__":
    report.run(main)
