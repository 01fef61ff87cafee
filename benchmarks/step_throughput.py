"""Optimizer step throughput and peak extra memory: LearnedOptimizer vs a naive LSTM step vs Adam.

    python benchmarks/step_throughput.py [--sizes 10000 100000 1000000 10000000] [--panel-problems 20]

For each parameter size, every variant steps the same parameter with the same gradient; the table
gives coordinates per second, the speed-up over the naive reference (one ``nn.LSTMCell`` pass per
layer over all coordinates at once, as a straightforward implementation would do) and over
LearnedOptimizer's PyTorch path (the chunked path it takes without the fused kernel), measured in
the same run, the time relative to ``torch.optim.Adam``, and the peak memory the step adds on top of
the parameters and optimizer state (Linux: peak resident set size, reset before each step).

First it prints the ceiling this CPU puts on any implementation: the LSTM's multiply-adds per
coordinate at the float32 matmul rate of a large ``torch.mm`` (MKL/oneDNN) measured in the same run.
The kernel also runs with the LSTM state stored in bfloat16 (half the bytes to read and write), and, where the
CPU has AVX-512-BF16, with bfloat16 gate matmuls (``precision="bf16"``), whose effect on the paper's MNIST panels
against float32 ("ieee") a last table gives (``--panel-problems`` problems each; 0 skips it; needs MNIST).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from gpu_step import precision_table
from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, kernel
from learned_optim.preprocessing import PREPROCESSINGS

import _report as report  # benchmarks/_report.py, beside this script


class NaiveLSTMStep:
    """The reference a straightforward implementation gives: nn.LSTMCell over all coordinates at once."""

    def __init__(self, param: torch.Tensor, network: CoordinatewiseLSTM) -> None:
        self.param, self.network = param, network
        self.state = [torch.zeros(param.numel(), network.hidden_size) for _ in range(2 * network.num_layers)]

    @torch.no_grad()
    def step(self) -> None:
        x = PREPROCESSINGS[self.network.preprocessing][0](self.param.grad.reshape(-1), self.network.p)
        for layer, cell in enumerate(self.network.cells):
            h, c = cell(x, (self.state[2 * layer], self.state[2 * layer + 1]))
            self.state[2 * layer], self.state[2 * layer + 1] = h, c
            x = h
        self.param.add_(self.network.head(x).view_as(self.param) * self.network.output_scale)


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def measure(step, reps: int) -> tuple[float, float]:
    """(median seconds per step, peak extra MiB of one step) after a warm-up step that builds the state."""
    step()
    peak_extra = float("nan")
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        before = rss_kib("VmRSS")
        clear_refs.write_text("5")  # reset the peak RSS to the current RSS
        step()
        peak_extra = (rss_kib("VmHWM") - before) / 1024
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times), peak_extra


def matmul_flops_per_second(size: int = 2048) -> float:
    """float32 flop/s of a large square ``torch.mm``, the best this CPU does on dense math."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * size**3 / (time.perf_counter() - started)


def flops_per_coordinate(network: CoordinatewiseLSTM) -> int:
    """Multiply-adds (x2) of one step of one coordinate: every layer's gate matmul and the head."""
    features = PREPROCESSINGS[network.preprocessing][1]
    inputs = [features] + [network.hidden_size] * (network.num_layers - 1)
    return 2 * (sum((i + network.hidden_size) * 4 * network.hidden_size for i in inputs) + network.hidden_size)


class PyTorchPath:
    """LearnedOptimizer's step with the fused kernel switched off (LEARNED_OPTIM_KERNEL=0)."""

    def __init__(self, optimizer: LearnedOptimizer) -> None:
        self.optimizer = optimizer

    def __call__(self) -> None:
        with mock.patch.dict(os.environ, {kernel.ENV_VAR: "0"}):
            self.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--naive-max", type=int, default=10_000_000, help="skip the naive step above this size")
    parser.add_argument("--panel-problems", type=int, default=20, help="per mnist-paper panel, for bf16's effect")
    args = report.parse_args(parser)
    checkpoint = Path(__file__).parents[1] / "pretrained" / "l2l-mnist"
    network = CoordinatewiseLSTM.from_pretrained(checkpoint) if checkpoint.is_dir() else CoordinatewiseLSTM()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fused kernel: "
          f"{'yes' if kernel.available() else 'no (no C++ compiler)'}, "
          f"bfloat16 matmuls: {'yes' if kernel.bf16_dot() else 'no (needs AVX-512-BF16)'}")
    flops, rate = flops_per_coordinate(network), matmul_flops_per_second()
    print(f"ceiling: {flops:,} flops per coordinate at torch.mm's {rate / 1e9:.0f} GFLOP/s = "
          f"{rate / flops / 1e6:.1f}M coordinates/s for the matmuls alone")
    print("| parameters | variant | coords/s | x naive | x PyTorch path | time / Adam | peak extra MiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        generator = torch.Generator().manual_seed(0)
        results = {}
        variants = {
            "Adam": lambda p: torch.optim.Adam([p]).step,
            "naive LSTM": lambda p: NaiveLSTMStep(p, network).step,
            "LearnedOptimizer, PyTorch path": lambda p: PyTorchPath(LearnedOptimizer([p], network)),
            "LearnedOptimizer, fused kernel": lambda p: LearnedOptimizer([p], network).step,
            "LearnedOptimizer, fused kernel, bf16 state":
                lambda p: LearnedOptimizer([p], network, state_dtype=torch.bfloat16).step,
        }
        if kernel.bf16_dot():
            variants["LearnedOptimizer, fused kernel, bf16 matmuls"] = \
                lambda p: LearnedOptimizer([p], network, precision="bf16").step
        for name, make in variants.items():
            if name == "naive LSTM" and size > args.naive_max:
                continue
            param = torch.nn.Parameter(torch.randn(size, generator=generator) * 0.1)
            param.grad = torch.randn(size, generator=generator) * 1e-3
            results[name] = measure(make(param), reps=args.reps if size <= 1_000_000 else 2)
            del param
        for name, (seconds, peak) in results.items():
            speedup = results["naive LSTM"][0] / seconds if "naive LSTM" in results else float("nan")
            over_pytorch = results["LearnedOptimizer, PyTorch path"][0] / seconds
            print(f"| {size:,} | {name} | {size / seconds / 1e6:.2f}M | {speedup:.1f} | {over_pytorch:.2f} | "
                  f"{seconds / results['Adam'][0]:.0f} | {peak:.0f} |", flush=True)
    if kernel.bf16_dot() and args.panel_problems:
        precision_table(network, "l2l-mnist", args.panel_problems, "cpu", ("ieee", "bf16"))


if __name__ == "__main__":
    report.run(main)
