"""The fused GPU step (Triton) against the eager path and torch.optim.Adam, and its reduced precisions' effect.

    python benchmarks/gpu_step.py [--sizes 1e6 1e7 1e8] [--panel-problems 20] [--checkpoint l2l-mnist]

Needs a CUDA device and Triton. First table: one flat CUDA parameter of N coordinates stepped by
``torch.optim.Adam`` (fused), by ``LearnedOptimizer`` through the eager PyTorch path
(``LEARNED_OPTIM_TRITON=0``, 8,192-coordinate chunks as on CPU) and through the Triton kernel with float32
each matmul precision (float32 accuracy from three TF32 products "tf32x3", the default; float32 on the CUDA
cores "ieee"; single TensorFloat-32 or bfloat16 products), with float32 and bfloat16 LSTM state; median time per
step over repeats (CUDA-synchronised), coordinates per second, ratios against Adam and the eager path measured
in the same run, the bytes each step must move per coordinate and the bandwidth that implies. Second table:
each precision on the paper's MNIST panels (mnist-paper suite, the same problems for every precision): mean
final loss and its relative change against "ieee".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import contextmanager

import torch

from learned_optim import LearnedOptimizer, pretrained, triton_kernel
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.metrics import METRICS
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import suite_panels
from learned_optim.meta.tasks import seeded

import _report as report  # benchmarks/_report.py, beside this script


@contextmanager
def triton_off():
    os.environ[triton_kernel.ENV_VAR] = "0"
    try:
        yield
    finally:
        del os.environ[triton_kernel.ENV_VAR]


def seconds_per_step(make_optimizer, size: int, repeats: int) -> float:
    """Median over ``repeats`` timed steps (after two warm-up steps) of one optimizer step on ``size`` coordinates."""
    param = torch.nn.Parameter(torch.randn(size, device="cuda") * 0.1)
    param.grad = torch.randn(size, device="cuda") * 1e-3
    optimizer = make_optimizer([param])
    times = []
    for repeat in range(repeats + 2):
        torch.cuda.synchronize()
        started = time.perf_counter()
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    del optimizer, param
    torch.cuda.empty_cache()
    return statistics.median(times[2:])


def throughput_table(network, sizes: list[int]) -> None:
    state_bytes = 2 * network.num_layers * network.hidden_size
    rules = {  # name -> (optimizer factory, bytes moved per coordinate, eager)
        "torch.optim.Adam (fused)": (lambda p: torch.optim.Adam(p, lr=1e-3, fused=True), 4 + 3 * 8, False),
        "eager path, fp32 state": (lambda p: LearnedOptimizer(p, network), 4 + 8 + 2 * 4 * state_bytes, True),
    }
    for precision in triton_kernel.PRECISIONS:
        for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
            name = f"Triton {precision}, {str(dtype).removeprefix('torch.')} state"
            rules[name] = ((lambda p, precision=precision, dtype=dtype:
                            LearnedOptimizer(p, network, precision=precision, state_dtype=dtype)),
                           4 + 8 + 2 * size * state_bytes, False)
    print(f"{torch.cuda.get_device_name()}: one flat parameter, {network.config}")
    print("| rule | N | ms / step | M coords / s | vs Adam | vs eager | bytes / coord | GB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        measured = {}
        for name, (make, bytes_per, eager) in rules.items():
            repeats = 3 if (eager or "ieee" in name) and size > 10**7 else 10  # seconds per step there
            if eager:
                with triton_off():
                    measured[name] = seconds_per_step(make, size, repeats)
            else:
                measured[name] = seconds_per_step(make, size, repeats)
            seconds = measured[name]
            adam, eager_time = measured["torch.optim.Adam (fused)"], measured.get("eager path, fp32 state")
            print(f"| {name} | {size:.0e} | {seconds * 1e3:.3f} | {size / seconds / 1e6:.1f} | {adam / seconds:.2f}x | "
                  f"{'' if eager_time is None else f'{eager_time / seconds:.1f}x'} | {bytes_per} | "
                  f"{bytes_per * size / seconds / 1e9:.0f} |")


def precision_table(network, checkpoint: str, problems: int, device: str = "cuda",
                    precisions: tuple[str, ...] = triton_kernel.PRECISIONS, reference: str = "ieee") -> None:
    """Mean final loss on each mnist-paper panel with each matmul precision (the same problems for every one) and
    the largest relative change against the float32 ``reference``."""
    print(f"\n{checkpoint} on the mnist-paper panels with each matmul precision ({problems} test problems each, "
          f"the same for every precision; final = mean loss over the last 10 steps; {device})")
    print("| panel | " + " | ".join(f"{p} final" for p in precisions) + f" | worst change vs {reference} |")
    print("|---|" + "---|" * (len(precisions) + 1))
    for name, (spec, steps, _, _) in suite_panels("mnist-paper", DEFAULTS["mnist"]["task"]).items():
        task = make_task(spec, "test", device=device)
        sampled = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(problems)]
        finals = {}
        for precision in precisions:
            runs = [run_optimizer(problem, lambda params: LearnedOptimizer(params, network, precision=precision),
                                  steps) for problem in sampled]
            finals[precision] = statistics.mean(METRICS["final"](run.losses) for run in runs)
        worst = max(abs(finals[p] - finals[reference]) / finals[reference] for p in precisions)
        print(f"| {name} | " + " | ".join(f"{finals[p]:.4f}" for p in precisions) + f" | {worst:.2%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument("--panel-problems", type=int, default=20)
    parser.add_argument("--checkpoint", default="l2l-mnist")
    args = report.parse_args(parser)
    if not torch.cuda.is_available() or not triton_kernel.available():
        raise SystemExit("this benchmark needs a CUDA device and Triton")
    network = pretrained.load(args.checkpoint)
    throughput_table(network, [int(size) for size in args.sizes])
    if args.panel_problems:
        precision_table(network, args.checkpoint, args.panel_problems)


if __name__ == "__main__":
    report.run(main, device="cuda")
