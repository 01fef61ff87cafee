"""What ``lr`` does to a learned optimizer: the update multiplier on MNIST panels (sigmoid and ReLU MLPs).

    python benchmarks/lr_scale.py [--checkpoint l2l-mnist] [--problems 10] [--steps 100]

``LearnedOptimizer`` applies ``lr`` times the network's update, so ``lr=1`` is the rule exactly as
meta-trained; this runs a range of multipliers on the same evaluation problems (test-image
minibatches, as the panels) and prints the mean loss over the last 10 steps and the sum of losses.
Needs MNIST (learned_optim.meta.data).
"""

from __future__ import annotations

import argparse
import statistics

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, METRICS, run_optimizer
from learned_optim.meta.registry import DEFAULTS, make_task
from learned_optim.meta.tasks import seeded

MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="l2l-mnist")
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    network = pretrained.load(args.checkpoint)
    print(f"{args.checkpoint}, MNIST MLPs with 20 hidden units, {args.steps} steps, {args.problems} problems")
    print("| activation | lr | final (mean of last 10) | sum |")
    print("|---|---|---|---|")
    for activation in ("sigmoid", "relu"):
        task = make_task({**DEFAULTS["mnist"]["task"], "activation": activation}, "test")
        problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
        for lr in MULTIPLIERS:
            runs = [run_optimizer(p, lambda params: LearnedOptimizer(params, network, lr=lr), args.steps).losses
                    for p in problems]
            final = statistics.mean(METRICS["final"](r) for r in runs)
            print(f"| {activation} | {lr:g} | {final:.4f} | {statistics.mean(sum(r) for r in runs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
