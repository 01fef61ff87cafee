"""Reports of comparisons: markdown tables, loss-curve figures, the JSON results and neural art's image grids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .evaluation import EVALUATION_SEED, Summary, Trajectory, run_again
from .metrics import METRICS
from .tasks import Task, seeded

GRID_PROBLEMS = 3
"""Rows of a neural-art panel's image grid."""


def format_table(summaries: list[Summary], heldout_split: str = "test") -> str:
    """A markdown table: loss at steps 20, 40 and the last, mean of the last 10 steps, sum, and
    the held-out loss (on the task's whole ``heldout_split`` data set, when it has one)."""
    keys = [k for k in summaries[0].metrics if k.startswith("loss@")] + ["final", "sum"]
    has_heldout = all("heldout" in s.metrics for s in summaries)
    header = ["optimizer", "lr (final / sum)", *keys] + ([f"{heldout_split}-set loss"] if has_heldout else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        lrs = " / ".join("–" if lr is None else f"{lr:.3g}" for lr in s.learning_rates.values())
        cells = [f"{s.metrics[k]:.4g}" + (f" ± {s.metrics[k + '_stderr']:.2g}" if k in METRICS else "") for k in keys]
        if has_heldout:
            cells.append(f"{s.metrics['heldout']:.4g}")
        lines.append("| " + " | ".join([s.name, lrs, *cells]) + " |")
    return "\n".join(lines)


def plot(summaries: list[Summary], path: Path, title: str) -> None:
    """Mean loss curves on a log scale, one line per optimizer, like the paper's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for s in summaries:
        ax.plot(range(1, len(s.mean_curve) + 1), s.mean_curve, label=s.name, linewidth=2 if s.name == "LSTM" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(summaries: list[Summary], folder: Path, name: str, title: str, info: dict[str, Any]) -> str:
    """Write ``name.json`` (``info`` and the results) and ``name.png`` into ``folder``; returns the
    markdown table."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({**info, "results": [s.to_json() for s in summaries]}, indent=1))
    plot(summaries, folder / f"{name}.png", title)
    return format_table(summaries, info.get("split", "test"))


def summary_row(title: str, summaries: list[Summary]) -> str:
    """A panel's line of the summary: the LSTM's final loss against the best tuned baseline's, on how many
    problems it is below that baseline's on the same problem (common random numbers; :func:`~.evaluation.compare`
    gives the best baseline its per-problem results), and on how many it is below the problem's initial loss (never
    stuck, never worse)."""
    lstm = next(s for s in summaries if s.name == "LSTM")
    best = min((s for s in summaries if s.name != "LSTM"), key=lambda s: s.metrics["final"], default=None)
    improved = sum(METRICS["final"](run.losses) < run.losses[0] for run in lstm.runs)
    if best is None:
        against = "– | – | –"
    else:
        theirs = best.problem_finals
        wins = f"{sum(ours < other for ours, other in zip(lstm.problem_finals, theirs))} / {len(theirs)}"
        against = (f"{best.metrics['final']:.4g} ± {best.metrics['final_stderr']:.2g} ({best.name}, lr "
                   f"{best.learning_rates['final']:.3g}) | "
                   f"{lstm.metrics['final'] / best.metrics['final']:.2f} | {wins}")
    return (f"| {title} | {lstm.metrics['final']:.4g} ± {lstm.metrics['final_stderr']:.2g} | {against} | "
            f"{improved} / {len(lstm.runs)} |")


def data_description(family: str, task: Task, split: str = "test") -> str:
    """Where a panel's problems come from (``split``), for its report."""
    unseen = ("which meta-training and validation never see" if split == "test" else
              "which meta-training never sees (for choosing between networks; reports use the test split)")
    if family.startswith("mnist"):
        images = "test images" if split == "test" else "validation images (the last 10,000 training images)"
        return (f"minibatches from the 10,000 MNIST {images}, {unseen}; {split}-set loss = loss of the final "
                "parameters on all 10,000 of them")
    if family == "art":
        from .tasks.art import SPLITS

        return (f"random crops of the {len(SPLITS[split])} {split} photos ({', '.join(SPLITS[split])}), {unseen}; "
                f"baselines tuned on the {len(SPLITS['validation'])} validation photos; features: "
                f"{task.features.description}; images start at the content photo")
    if family.startswith("text-lm"):
        from .tasks.text import SPLITS

        start, end = SPLITS[split]
        return (f"windows of the {split} text (from {start:.0%} to {end:.0%} of the bundled Python standard-library "
                f"sources), {unseen}")
    return "synthetic problems drawn from evaluation seeds"


def _first_runs(task: Task, summary: Summary, steps: int, rows: int) -> list[Trajectory]:
    """``summary``'s runs of the first ``rows`` evaluation problems: its own, or, for a baseline read from an earlier
    evaluation (which keeps no images), those problems run again at its ``final`` learning rate."""
    if summary.runs:
        return summary.runs[:rows]
    return run_again(summary, [task.sample(seeded(EVALUATION_SEED + row)) for row in range(rows)], steps)


def write_image_grid(task: Task, summaries: list[Summary], steps: int, path: Path, title: str) -> None:
    """The first :data:`GRID_PROBLEMS` evaluation problems: content, style, the LSTM's image and the best tuned
    baseline's (by final loss) after ``steps`` steps, with their losses (the evaluation's own runs, or a measured
    baseline's run again)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lstm = next(s for s in summaries if s.name == "LSTM")
    baseline = min((s for s in summaries if s.name != "LSTM"), key=lambda s: s.metrics["final"])
    shown = {"LSTM": lstm, f"{baseline.name} (lr {baseline.learning_rates['final']:.3g})": baseline}
    rows = min(GRID_PROBLEMS, len(lstm.runs))
    runs = {label: _first_runs(task, summary, steps, rows) for label, summary in shown.items()}
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows + 0.4), squeeze=False)
    for row in range(rows):
        content, style = task.images(seeded(EVALUATION_SEED + row))  # the problem's starting image and style
        images = [("content", content), ("style", style)]
        for label in shown:
            run = runs[label][row]
            diverged = run.params is None
            images.append((f"{label}: " + ("diverged" if diverged else f"{run.losses[-1]:.3g}"),
                           torch.zeros_like(content) if diverged else run.params["image"]))
        for ax, (label, image) in zip(axes[row], images):
            ax.imshow(image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{title}, step {steps}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
