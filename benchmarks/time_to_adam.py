"""Wall-clock to reach tuned Adam's 100-step loss: LearnedOptimizer vs Adam, on the MNIST MLP and on the
paper's CIFAR ConvNet architecture on MNIST (batch 128), where forward and backward dominate the step.

    python benchmarks/time_to_adam.py [--checkpoint l2l-mnist ...] [--precision tf32x3 ...]
        [--state-dtype float32 ...] [--lr 1 ...] [--problems 5] [--repeats 3] [--tasks mlp convnet]
        [--split test]

Adam's learning rate is tuned (final loss, log grid) on separate problems; the target is its mean
loss over steps 91-100 on the benchmark problems. Each optimizer then trains the same problems in an
ordinary loop and we time (forward, backward, step included) until the mean loss of the last 10
steps reaches the target. Both are measured in the same run, taking turns on each problem (so a machine
that speeds up or slows down affects both), and each problem's time is the median of ``--repeats`` runs
(the steps are the same in every run). Every checkpoint runs with every ``--precision`` of ``LearnedOptimizer``
(on CPU, ``bf16`` differs from float32 where the CPU has AVX-512-BF16) and every ``--state-dtype`` of its LSTM
state (bfloat16 halves the state the step reads and writes) and every ``--lr`` (a scale of its whole step; the
default 1 is the untuned optimizer). ``--split validation`` races on validation images, to choose such a setting
without touching the test images. The minor page faults per step (Linux, macOS) show how much of the time went to
the C allocator mapping fresh memory for forward and backward, which depends on the process's history more than on
the optimizer (setting glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` high removes it). Needs
MNIST (learned_optim.meta.tasks.mnist).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

try:
    from resource import RUSAGE_SELF, getrusage
except ImportError:  # resource is Unix-only: on Windows the page-fault column reads nan
    getrusage = None

import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.fusion import DEFAULT_PRECISION, PRECISIONS
from learned_optim.meta.evaluation import BASELINES, EVALUATION_SEED, TUNING_SEED, run_optimizer, tune
from learned_optim.meta.metrics import FINAL_STEPS, METRICS
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.tasks import mnist_task, paper_convnet, seeded

import _report as report  # benchmarks/_report.py, beside this script

TASKS = {
    "mlp": ("MNIST MLP 784-20-10, sigmoid", lambda split: make_task(DEFAULTS["mnist"]["task"], split)),
    "convnet": ("the paper's CIFAR ConvNet on MNIST", lambda split: mnist_task(paper_convnet, split)),
}


def minor_page_faults() -> float:
    """The process's minor page faults so far (nan where ``resource`` is missing)."""
    return getrusage(RUSAGE_SELF).ru_minflt if getrusage is not None else float("nan")


def time_to_target(problem, make_optimizer, target: float,
                   max_steps: int) -> tuple[int | None, float, float, float]:
    """(steps, seconds, ``final`` metric: mean of the last 10 losses, minor page faults per step) when that mean
    reaches ``target``; steps None if it never does within ``max_steps``."""
    params = {name: p.detach().clone().requires_grad_() for name, p in problem.params.items()}
    optimizer = make_optimizer(list(params.values()))
    losses = []
    reached, faults, started = None, minor_page_faults(), time.perf_counter()
    for step in range(max_steps):
        optimizer.zero_grad()
        loss = problem.loss(params, step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) >= FINAL_STEPS and METRICS["final"](losses) <= target:
            reached = step + 1
            break
    seconds = time.perf_counter() - started
    return reached, seconds, METRICS["final"](losses), (minor_page_faults() - faults) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", default=[pretrained.DEFAULT_CHECKPOINT],
                        help="one or more, raced together (default: the default network)")
    parser.add_argument("--problems", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS,
                        default=[DEFAULT_PRECISION], help="one or more, each raced")
    parser.add_argument("--state-dtype", nargs="+", choices=["float32", "bfloat16"], default=["float32"],
                        help="one or more, each raced")
    parser.add_argument("--lr", type=float, nargs="+", default=[1.0], help="one or more step scales, each raced")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="the images of the raced problems (Adam is tuned on other problems of the same split)")
    args = report.parse_args(parser)
    for option in ("problems", "max_steps", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if min(args.lr) <= 0:
        parser.error(f"--lr takes positive step scales, got {args.lr}")
    networks = {name: pretrained.load(name) for name in args.checkpoint}
    contenders = {}
    for name, precision, state_dtype, lr in itertools.product(args.checkpoint, args.precision, args.state_dtype,
                                                              args.lr):
        options = ", ".join(option for option, default in ((precision, DEFAULT_PRECISION),
                                                          (f"{state_dtype} state", "float32 state"),
                                                          (f"lr={lr:g}", "lr=1"))
                            if option != default)
        contenders[f"{name} ({options})" if options else name] = (
            lambda params, network=networks[name], precision=precision, dtype=getattr(torch, state_dtype), lr=lr:
            LearnedOptimizer(params, network, lr=lr, precision=precision, state_dtype=dtype))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for key in args.tasks:
        description, make = TASKS[key]
        race(description, make(args.split), contenders, args)


def race(description: str, task, learned: dict, args) -> None:
    """Tune Adam on the task, then time it and each learned optimizer (name: its factory) to Adam's 100-step loss;
    print a table."""
    adam = BASELINES["Adam"]
    lr = tune(adam, [task.sample(seeded(TUNING_SEED + i)) for i in range(args.problems)], 100)["final"]
    problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
    target = statistics.mean(METRICS["final"](run_optimizer(p, lambda params: adam(params, lr), 100).losses)
                             for p in problems)
    print(f"\n{description} ({args.split} images): Adam lr {lr:.3g}; "
          f"target = Adam's mean loss over steps 91-100 = {target:.4f}")
    contenders = {"Adam": lambda params: adam(params, lr), **learned}
    results = {name: [] for name in contenders}
    for problem in problems:
        runs = {name: [] for name in contenders}
        for repeat in range(args.repeats):  # the contenders take turns, in alternating order
            for name in list(contenders)[::1 if repeat % 2 == 0 else -1]:
                runs[name].append(time_to_target(problem, contenders[name], target, args.max_steps))
        for name, timed in runs.items():  # steps and loss are the same every run; seconds and faults: medians
            results[name].append((timed[0][0], statistics.median(t for _, t, _, _ in timed), timed[0][2],
                                  statistics.median(f for _, _, _, f in timed)))
    print("| optimizer | steps to target (mean) | seconds to target (mean) | reached | loss where it stopped (mean) | "
          "minor page faults / step (mean) |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        reached = [(s, t) for s, t, _, _ in runs if s is not None]
        steps = statistics.mean(s for s, _ in reached) if reached else float("nan")
        seconds = statistics.mean(t for _, t in reached) if reached else float("nan")
        stopped = statistics.mean(loss for _, _, loss, _ in runs)
        faults = statistics.mean(f for _, _, _, f in runs)
        print(f"| {name} | {steps:.0f} | {seconds:.3f} | {len(reached)}/{len(runs)} | {stopped:.4f} | {faults:.0f} |")
    adam_times = [t for _, t, _, _ in results["Adam"]]
    for name in learned:
        ours = [t for s, t, _, _ in results[name] if s is not None]
        if len(ours) == len(problems):
            first = sum(t < adam for t, adam in zip(ours, adam_times))
            print(f"wall-clock ratio Adam / {name}: {statistics.mean(adam_times) / statistics.mean(ours):.2f} "
                  f"(> 1: learned is faster); first on {first} of {len(problems)} problems")
        else:
            print(f"{name} did not reach the target within {args.max_steps} steps on every problem")


if __name__ == "__main__":
    report.run(main)
