"""What the zero-gradient rule changes for the bundled checkpoints: each checkpoint's panels run with the rule (a
coordinate whose gradient is exactly zero does not move) and without it (the network's update at zero input applied
anyway, as before the rule), on the same test problems, on the PyTorch path; with the share of gradient entries
that were exactly zero (MNIST's blank border pixels, dead ReLU units, style pixels that do not matter).

    python benchmarks/zero_gradients.py [--problems 20] [--out docs/performance/zero_gradients.md]
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

from learned_optim import LearnedOptimizer, functional, kernel, pretrained, triton_kernel
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.metrics import METRICS
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import SUITES, suite_panels
from learned_optim.meta.tasks import seeded

import _report as report  # benchmarks/_report.py, beside this script

PANELS = [("l2l-mnist", "mnist-paper", "mnist-20-sigmoid-100"), ("l2l-mnist", "mnist-paper", "mnist-40-sigmoid-100"),
          ("l2o-generalist", "generalist", "mnist-20-relu-100"),
          ("l2o-generalist", "generalist", "mnist-2x20-sigmoid-100"),
          ("l2l-art", "neural-art", "art-starry-night-64")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--steps", type=int, help="steps per run (default: each panel's)")
    parser.add_argument("--panels", nargs="+", default=[panel for _, _, panel in PANELS])
    args = report.parse_args(parser)
    print(f"{args.problems} test problems per panel; final = mean loss over the last 10 steps")
    print("| checkpoint | panel | zero gradients | final with the rule | final without | with - without (paired) |")
    print("|---|---|---|---|---|---|")
    for checkpoint, suite, name in PANELS:
        if name not in args.panels:
            continue
        network = pretrained.load(checkpoint)
        spec, steps, _, _ = suite_panels(suite, DEFAULTS[SUITES[suite][0]]["task"])[name]
        task = make_task(spec, "test")
        problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
        counts = [0, 0]  # zero gradient entries, all entries

        def counting(params):
            optimizer = LearnedOptimizer(params, network)
            optimizer.register_step_pre_hook(lambda opt, *_: count(opt, counts))
            return optimizer

        def plain(params):
            return LearnedOptimizer(params, network)

        with mock.patch.dict("os.environ", {kernel.ENV_VAR: "0", triton_kernel.ENV_VAR: "0"}):
            ruled = [run_optimizer(p, counting, args.steps or steps).losses for p in problems]
            with mock.patch.object(functional, "moves_only_with_gradient", lambda update, grad: update):
                unruled = [run_optimizer(p, plain, args.steps or steps).losses for p in problems]
        finals = [[METRICS["final"](run) for run in runs] for runs in (ruled, unruled)]
        differences = [a - b for a, b in zip(*finals)]
        paired = f"{statistics.mean(differences):+.4f}"
        if len(differences) > 1:
            paired += f" ± {statistics.stdev(differences) / len(differences) ** 0.5:.4f}"
        print(f"| {checkpoint} | {name} | {counts[0] / counts[1]:.1%} | {statistics.mean(finals[0]):.4f} | "
              f"{statistics.mean(finals[1]):.4f} | {paired} |", flush=True)


def count(optimizer: LearnedOptimizer, counts: list[int]) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                counts[0] += int((p.grad == 0).sum())
                counts[1] += p.grad.numel()


if __name__ == "__main__":
    report.run(main)
