"""A long run on a language model: a byte-level Transformer trained on Python source for thousands of steps with
LearnedOptimizer (the default network, untuned), beside AdamW with its learning rate tuned on validation text.

    python examples/language_model.py [--steps 5000] [--out outputs/language-model]

The corpus is the library's bundled Python standard-library sources (PSF licence), split 80/10/10 into training,
validation and test text. AdamW runs at each rate of ``--adamw-lrs``; the rate with the lowest final validation
loss is the tuned one. Prints the final validation and test losses, checks that no loss is NaN, and plots the
training loss (a moving average) and the validation loss of LearnedOptimizer and tuned AdamW against the step into
OUT/language_model.png (numbers in OUT/language_model.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from learned_optim import LearnedOptimizer
from learned_optim.meta.tasks.text import CharTransformer, load_text

CONTEXT, WIDTH, LAYERS, BATCH = 32, 32, 2, 32
EVAL_BATCHES = 20


def batch(text: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(text.numel() - CONTEXT - 1, (BATCH, 1), generator=generator)
    windows = text[starts + torch.arange(CONTEXT + 1)]
    return windows[:, :-1], windows[:, 1:].reshape(-1)


def held_out_loss(model: nn.Module, split: str) -> float:
    """Mean loss on fixed batches of ``split`` (the same batches for every optimizer)."""
    text, generator = load_text(split), torch.Generator().manual_seed(7)
    with torch.no_grad():
        return sum(nn.functional.cross_entropy(model(x), y).item()
                   for x, y in (batch(text, generator) for _ in range(EVAL_BATCHES))) / EVAL_BATCHES


def resident_mb() -> float:
    """This process's resident memory (Linux), in MB; NaN elsewhere."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return math.nan


def train(make_optimizer, steps: int, evaluate_every: int, description: str) -> dict:
    """Train a fresh model (the same initialisation and batches for every optimizer) for ``steps`` steps."""
    from tqdm.auto import tqdm

    torch.manual_seed(0)
    model = CharTransformer(CONTEXT, WIDTH, LAYERS)
    optimizer = make_optimizer(model.parameters(), steps)
    text, generator = load_text("train"), torch.Generator().manual_seed(1)
    losses, validation, memory = [], {}, {}
    for step in tqdm(range(1, steps + 1), desc=description, unit="step", mininterval=2, disable=None):
        x, y = batch(text, generator)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % evaluate_every == 0 or step == steps:
            validation[step], memory[step] = held_out_loss(model, "validation"), resident_mb()
    return {"losses": losses, "validation": validation, "memory_mb": memory, "test": held_out_loss(model, "test")}


def moving_average(values: list[float], window: int = 50) -> list[float]:
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    return [(sums[i] - sums[max(0, i - window)]) / min(i, window) for i in range(1, len(sums))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000, help="training steps (default: 5000)")
    parser.add_argument("--adamw-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2],
                        help="AdamW's learning rates to tune over (default: 1e-3 3e-3 1e-2)")
    parser.add_argument("--out", default="outputs/language-model", help="folder of the plot and numbers")
    args = parser.parse_args()
    every = max(1, args.steps // 20)
    runs = {"LearnedOptimizer": train(lambda params, steps: LearnedOptimizer(params, total_steps=steps), args.steps,
                                      every, "LearnedOptimizer")}
    for lr in args.adamw_lrs:
        runs[f"AdamW lr {lr:g}"] = train(lambda params, steps: torch.optim.AdamW(params, lr=lr), args.steps, every,
                                         f"AdamW lr {lr:g}")
    tuned = min((name for name in runs if name.startswith("AdamW")), key=lambda name: runs[name]["validation"]
                [args.steps])
    print(f"{args.steps} steps of a {sum(p.numel() for p in CharTransformer(CONTEXT, WIDTH, LAYERS).parameters()):,}"
          f"-parameter byte-level Transformer on Python source; tuned AdamW: {tuned}")
    print("| optimizer | final validation loss | test loss | NaN | memory (MB) at 20% / 100% of the run |")
    print("|---|---|---|---|---|")
    for name, run in runs.items():
        marks = sorted(run["memory_mb"])
        print(f"| {name}{' (tuned)' if name == tuned else ''} | {run['validation'][args.steps]:.4f} | "
              f"{run['test']:.4f} | {'yes' if any(map(math.isnan, run['losses'])) else 'no'} | "
              f"{run['memory_mb'][marks[max(0, len(marks) // 5 - 1)]]:.0f} / {run['memory_mb'][marks[-1]]:.0f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "language_model.json").write_text(json.dumps({"steps": args.steps, "tuned": tuned, "runs": runs}) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, color in (("LearnedOptimizer", "C0"), (tuned, "C1")):
        run = runs[name]
        axes.plot(range(1, args.steps + 1), moving_average(run["losses"]), color=color, alpha=0.6,
                  label=f"{name}: training (moving average)")
        axes.plot(list(run["validation"]), list(run["validation"].values()), "o-", color=color, markersize=3,
                  label=f"{name}: validation")
    axes.set(xlabel="step", ylabel="cross-entropy (nats per byte)", ylim=(None, 3.5),
             title="Byte-level Transformer on Python source")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "language_model.png", dpi=120)
    print(f"plot: {out / 'language_model.png'}")


if __name__ == "__main__":
    main()
