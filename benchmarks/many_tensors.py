"""The step on models of many small parameter tensors: one kernel call per param group vs one per tensor.

    python benchmarks/many_tensors.py [--reps 20]

Real models hold many small tensors (biases, norms, a Transformer's hundreds of matrices). LearnedOptimizer
updates all the CPU parameters of a param group in one call of the fused kernel, its threads splitting the
tensors' tiles laid end to end. For each model the table gives the median time of one step with every
tensor in one group (on torch's threads and on one), with one group per tensor (one kernel call each: how
every step ran before), with the same number of coordinates in one flat tensor (the compute floor), and of
``torch.optim.Adam`` (its default and foreach implementations), all measured in the same run on the same
gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, kernel
from learned_optim.meta.tasks import mlp, paper_convnet
from learned_optim.optimizer import _threads

import _report as report  # benchmarks/_report.py, beside this script


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "the paper's CIFAR ConvNet (MNIST input)": paper_convnet(),
        "Transformer encoder, 4 layers of width 64": nn.TransformerEncoder(
            nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 4, enable_nested_tensor=False),
        "MLP 784-20-10": mlp(784, (20,), 10, "sigmoid", init_std=0.01),
    }


class OneThread:
    """An optimizer whose step runs on one torch thread."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        with _threads(1):
            self.optimizer.step()


def median_step_seconds(optimizers: dict[str, torch.optim.Optimizer], reps: int) -> dict[str, float]:
    """Median seconds of one step of each optimizer, the optimizers taking turns (so that the machine's drift
    falls on all of them alike), after a first step that builds the state."""
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        optimizer.step()
    for _ in range(reps):
        for name, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    args = report.parse_args(parser)
    folder = Path(__file__).parents[1] / "pretrained" / "l2o-generalist"
    network = CoordinatewiseLSTM.from_pretrained(folder) if folder.is_dir() else CoordinatewiseLSTM()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fused kernel: "
          f"{'yes' if kernel.available() else 'no (no C++ compiler)'}; network {network.config}")
    variants = {  # each makes an optimizer of the model's parameters, or of the same coordinates as one tensor
        "LearnedOptimizer, one group": lambda ps, flat: LearnedOptimizer(ps, network),
        "LearnedOptimizer, one group, 1 thread": lambda ps, flat: OneThread(LearnedOptimizer(ps, network)),
        "LearnedOptimizer, a group per tensor": lambda ps, flat: LearnedOptimizer([{"params": [p]} for p in ps],
                                                                                  network),
        "LearnedOptimizer, one flat tensor": lambda ps, flat: LearnedOptimizer([flat], network),
        "Adam": lambda ps, flat: torch.optim.Adam(ps, 1e-3),
        "Adam (foreach)": lambda ps, flat: torch.optim.Adam(ps, 1e-3, foreach=True),
    }
    print("| model | tensors | coordinates | variant | ms / step | x one group |")
    print("|---|---|---|---|---|---|")
    for name, model in models().items():
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        size = sum(p.numel() for p in params)
        flat = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_()
        flat.grad = torch.cat([p.grad.reshape(-1) for p in params])
        seconds = median_step_seconds({variant: make(params, flat) for variant, make in variants.items()}, args.reps)
        for variant, s in seconds.items():
            print(f"| {name} | {len(params)} | {size:,} | {variant} | {s * 1e3:.2f} | "
                  f"{s / seconds['LearnedOptimizer, one group']:.2f} |", flush=True)


if __name__ == "__main__":
    report.run(main)
