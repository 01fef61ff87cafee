"""Effect of keeping the LSTM state in bfloat16 on the MNIST panel (784-20-10 sigmoid MLP, 100 steps).

    python benchmarks/state_dtype.py [--checkpoint l2l-mnist] [--problems 20]

Runs LearnedOptimizer with float32 and with bfloat16 state on the same evaluation problems and prints
the mean loss at step 100 and over steps 91-100, their relative difference, and the state's bytes per
coordinate. Needs MNIST (learned_optim.meta.tasks.mnist).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.tasks import seeded

import _report as report  # benchmarks/_report.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="l2l-mnist")
    parser.add_argument("--problems", type=int, default=20)
    args = report.parse_args(parser)
    network = pretrained.load(args.checkpoint)
    task = make_task(DEFAULTS["mnist"]["task"], "test")
    problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        runs = [run_optimizer(p, lambda params: LearnedOptimizer(params, network, state_dtype=dtype), 100).losses
                for p in problems]
        results[dtype] = (statistics.mean(r[-1] for r in runs), statistics.mean(sum(r[-10:]) / 10 for r in runs))
    bytes_per = {dtype: 2 * network.num_layers * network.hidden_size * torch.empty((), dtype=dtype).element_size()
                 for dtype in results}
    print(f"{args.checkpoint} on the MNIST panel (20 sigmoid units, 100 steps, {args.problems} problems)")
    print("| state dtype | bytes / coordinate | loss@100 | mean loss, steps 91-100 |")
    print("|---|---|---|---|")
    for dtype, (last, final) in results.items():
        print(f"| {str(dtype).removeprefix('torch.')} | {bytes_per[dtype]} | {last:.4f} | {final:.4f} |")
    (last32, final32), (last16, final16) = results[torch.float32], results[torch.bfloat16]
    print(f"relative difference bf16 vs fp32: loss@100 {abs(last16 - last32) / last32:.2%}, "
          f"steps 91-100 {abs(final16 - final32) / final32:.2%}")


if __name__ == "__main__":
    report.run(main)
