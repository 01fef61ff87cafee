"""Evaluation suites: panels of tasks on which a network meets tuned baselines, written as a report.

A panel is ``name -> (task spec, steps, title)``; :func:`run_suite` runs
:func:`~learned_optim.meta.evaluation.compare` on each and writes the JSON, the figures and a
``README.md`` index that ``publish`` embeds in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..network import CoordinatewiseLSTM
from .evaluation import LR_GRID, EVALUATION_SEED, Summary, compare, write_results
from .registry import make_task
from .tasks import Task, seeded

MNIST_PANELS = {
    "mnist-20-sigmoid-100": ({"hidden_sizes": [20]}, 100, "MNIST, 20 sigmoid units, 100 steps"),
    "mnist-40-sigmoid-100": ({"hidden_sizes": [40]}, 100, "MNIST, 40 sigmoid units, 100 steps"),
    "mnist-2x20-sigmoid-100": ({"hidden_sizes": [20, 20]}, 100, "MNIST, 2 hidden layers of 20, 100 steps"),
    "mnist-20-sigmoid-200": ({"hidden_sizes": [20]}, 200, "MNIST, 20 sigmoid units, 200 steps"),
    "mnist-20-relu-100": ({"hidden_sizes": [20], "activation": "relu"}, 100, "MNIST, 20 ReLU units, 100 steps"),
}
"""The paper's MNIST panels (Figure 4 and 5): task overrides, steps, title."""
NEURAL_ART_PANELS = {
    "art-starry-night-64": ({"style": "starry_night.jpg", "size": 64}, 128,
                            "Neural art: training style (The Starry Night), 64x64"),
    "art-ihc-128": ({"style": "ihc.png", "size": 128}, 128, "Neural art: new style (IHC micrograph), 128x128"),
}
"""The paper's neural-art tests (Figure 8): held-out photos with the training style at the training size, and
with a new style at double the size."""
SUITES = {"mnist-paper": ("mnist", MNIST_PANELS), "neural-art": ("art", NEURAL_ART_PANELS)}
"""Suite name -> (task family, panels)."""
GRID_PROBLEMS = 3
"""Rows of a neural-art panel's image grid."""


def single_panel(spec: dict, steps: int) -> dict[str, tuple[dict, int, str]]:
    """One panel: the task ``spec`` (quadratics evaluated one function per problem) run for ``steps`` steps."""
    if spec["name"] == "quadratic":
        spec = {**spec, "num_functions": 1}  # each function is evaluated on its own
    return {spec["name"]: (spec, steps, f"{spec['name']}: {json.dumps(spec)}")}


def run_suite(network: CoordinatewiseLSTM, panels: dict[str, tuple[dict, int, str]], protocol: dict, out: Path,
              command: str) -> None:
    """Compare ``network`` with tuned baselines on each panel ``name -> (task spec, steps, title)``.

    ``protocol``: ``problems``, ``tuning_problems``, and optionally ``tuning_split`` (the data split the baselines
    are tuned on; default: the evaluation's) and ``lr_grid`` (default: :data:`LR_GRID`). Writes each panel's JSON
    and figure (and, for neural art, an image grid), and ``out/README.md`` with every table and figure;
    ``command`` is the command line that regenerates them.
    """
    index = []
    grid = protocol.get("lr_grid", LR_GRID)
    for name, (spec, steps, title) in panels.items():
        task = make_task(spec, "test", heldout_split="test")
        tuning_task = make_task(spec, protocol["tuning_split"]) if "tuning_split" in protocol else None
        summaries = compare(network, task, steps, protocol["problems"], protocol["tuning_problems"],
                            tuning_task=tuning_task, lr_grid=grid)
        splits = data_description(spec["name"], task)
        info = {"task": spec, "steps": steps, "problems": protocol["problems"],
                "tuning_problems": protocol["tuning_problems"], "tuning_split": protocol.get("tuning_split", "test"),
                "lr_grid": grid, "splits": splits, "command": command}
        table = write_results(summaries, out, name, title, info)
        print(f"\n{title} ({protocol['problems']} problems; lr tuned on {protocol['tuning_problems']} others)")
        print(table)
        index.append(f"### {title}\n\n{table}\n\n![{title}]({name}.png)\n")
        if spec["name"] == "art":
            write_image_grid(task, summaries, steps, out / f"{name}-images.png", title)
            index.append(f"![{title}: images]({name}-images.png)\n")
    (out / "README.md").write_text(
        f"# Evaluation: {len(panels)} panel{'s' * (len(panels) > 1)}\n\nRegenerate with `{command}`.\n\n"
        f"Each panel: {protocol['problems']} fresh problems; baselines' learning rates tuned on "
        f"{protocol['tuning_problems']} other problems over a log grid from {min(grid):.3g} to {max(grid):.3g} "
        f"({len(grid)} rates), separately for `final` (mean loss over the last 10 steps) and `sum` (sum over all "
        "steps); `loss@t` is the (minibatch) loss computed at step t; ± is the standard error. "
        f"Data: {splits}.\n\n" + "\n".join(index))
    print(f"\nresults written to {out}/")


def data_description(family: str, task: Task) -> str:
    """Where a panel's problems come from, for its report."""
    if family == "mnist":
        return ("minibatches from the 10,000 MNIST test images, which meta-training and validation never see; "
                "test-set loss = loss of the final parameters on all 10,000 of them")
    if family == "art":
        from .art import SPLITS

        return (f"random crops of the {len(SPLITS['test'])} test photos ({', '.join(SPLITS['test'])}), which "
                f"meta-training and validation never see; baselines tuned on the {len(SPLITS['validation'])} "
                f"validation photos; features: {task.features.description}; images start at the content photo")
    return "synthetic problems drawn from evaluation seeds"


def write_image_grid(task: Task, summaries: list[Summary], steps: int, path: Path, title: str) -> None:
    """The first :data:`GRID_PROBLEMS` evaluation problems: content, style, the LSTM's image and the best tuned
    baseline's (by final loss) after ``steps`` steps, with their losses (the evaluation's own runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lstm = next(s for s in summaries if s.name == "LSTM")
    baseline = min((s for s in summaries if s.name != "LSTM"), key=lambda s: s.metrics["final"])
    shown = {"LSTM": lstm, f"{baseline.name} (lr {baseline.learning_rates['final']:.3g})": baseline}
    rows = min(GRID_PROBLEMS, len(lstm.runs))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows + 0.4), squeeze=False)
    for row in range(rows):
        content = task.sample(seeded(EVALUATION_SEED + row)).params["image"]  # the problem's starting image
        images = [("content", content), ("style", task.style)]
        for label, summary in shown.items():
            run = summary.runs[row]
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
