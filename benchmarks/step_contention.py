"""The optimizer step on a busy machine: slowdown beside a competing 2-thread training job.

    python benchmarks/step_contention.py [--steps 200]

Times ``optimizer.step()`` on a 784-20-10 MLP (15,910 parameters) for Adam, for LearnedOptimizer's
PyTorch path (without the fused kernel: ``LEARNED_OPTIM_KERNEL=0``) on torch's threads
(``parallel_threshold=0``) and as it ships (steps below 2**20 coordinates on one thread), and for
LearnedOptimizer with the fused kernel (the caller and a helper thread, at least 4,096 coordinates each, the caller
never waiting for the helper to wake): first on an idle machine,
then while another process trains a model with 2 torch threads (once with Adam, once with
LearnedOptimizer). Prints the median step time and the slowdown against the idle machine, measured in
the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from unittest import mock

import torch
from torch import nn

from learned_optim import LearnedOptimizer, kernel

import _report as report  # benchmarks/_report.py, beside this script

COMPETITOR = """
import torch, sys
from torch import nn
from learned_optim import LearnedOptimizer
torch.set_num_threads(2)
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.Adam(model.parameters()) if sys.argv[1] == "Adam" else LearnedOptimizer(model.parameters())
x, y = torch.randn(256, 784), torch.randint(10, (256,))
while True:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
"""

CANDIDATES = {  # name: (optimizer, whether the fused kernel may run)
    "Adam": (lambda params: torch.optim.Adam(params), True),
    "LearnedOptimizer, PyTorch path, torch's threads": (lambda params: LearnedOptimizer(params, parallel_threshold=0),
                                                        False),
    "LearnedOptimizer, PyTorch path": (lambda params: LearnedOptimizer(params), False),
    "LearnedOptimizer, fused kernel": (lambda params: LearnedOptimizer(params), True),
}


def median_step_ms(name: str, steps: int, env: dict[str, str]) -> float:
    """Candidate ``name``'s median step, measured in a fresh process: thread settings one candidate leaves behind
    (the PyTorch path's one-thread steps resize torch's OpenMP pool) would otherwise slow the next one down."""
    result = subprocess.run([sys.executable, __file__, "--measure", name, "--steps", str(steps)],
                            capture_output=True, text=True, check=True, env=env)
    return float(result.stdout.split()[-1])


def _measure(name: str, steps: int) -> float:
    make, use_kernel = CANDIDATES[name]
    with mock.patch.dict(os.environ, {} if use_kernel else {kernel.ENV_VAR: "0"}):
        return _median_step_ms(make, steps)


def _median_step_ms(make, steps: int) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 20), nn.Sigmoid(), nn.Linear(20, 10))
    optimizer = make(model.parameters())
    x, y = torch.randn(128, 784), torch.randint(10, (128,))
    times = []
    for step in range(steps + 10):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        started = time.perf_counter()
        optimizer.step()
        if step >= 10:
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement (default: 200)")
    parser.add_argument("--wait-policy", choices=["default", "passive"], default="default",
                        help="OpenMP's wait policy in every process: torch's threads spin after each parallel region "
                             "(default) or sleep (passive, OMP_WAIT_POLICY=PASSIVE)")
    parser.add_argument("--measure", choices=list(CANDIDATES), help=argparse.SUPPRESS)  # one candidate, in this process
    args = report.parse_args(parser)
    if args.measure:
        print(_measure(args.measure, args.steps))
        return
    env = {**os.environ, **({"OMP_WAIT_POLICY": "PASSIVE"} if args.wait_policy == "passive" else {})}
    idle = {name: median_step_ms(name, args.steps, env) for name in CANDIDATES}
    busy = {}
    for competitor in ("Adam", "LearnedOptimizer"):
        process = subprocess.Popen([sys.executable, "-c", COMPETITOR, competitor], env=env)
        try:
            time.sleep(3)  # let it start training
            busy[competitor] = {name: median_step_ms(name, args.steps, env) for name in CANDIDATES}
        finally:
            process.kill()
            process.wait()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OpenMP wait policy {args.wait_policy}; "
          "step of a 15,910-parameter MLP, median ms")
    print("| optimizer | idle | beside Adam training | slowdown | beside LearnedOptimizer training | slowdown |")
    print("|---|---|---|---|---|---|")
    for name, base in idle.items():
        a, b = busy["Adam"][name], busy["LearnedOptimizer"][name]
        print(f"| {name} | {base:.2f} | {a:.2f} | {a / base:.1f}x | {b:.2f} | {b / base:.1f}x |")


if __name__ == "__main__":
    report.run(main)
