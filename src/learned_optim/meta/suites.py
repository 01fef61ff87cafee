"""Evaluation suites: panels of tasks on which a network meets tuned baselines, written as a report.

A panel is ``name -> (task spec, steps, title)``; :func:`run_suite` runs
:func:`~learned_optim.meta.evaluation.compare` on each and writes the JSON, the figures and a
``README.md`` index that ``publish`` embeds in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..network import CoordinatewiseLSTM
from .evaluation import compare, write_results
from .registry import make_task

MNIST_PANELS = {
    "mnist-20-sigmoid-100": ({"hidden_sizes": [20]}, 100, "MNIST, 20 sigmoid units, 100 steps"),
    "mnist-40-sigmoid-100": ({"hidden_sizes": [40]}, 100, "MNIST, 40 sigmoid units, 100 steps"),
    "mnist-2x20-sigmoid-100": ({"hidden_sizes": [20, 20]}, 100, "MNIST, 2 hidden layers of 20, 100 steps"),
    "mnist-20-sigmoid-200": ({"hidden_sizes": [20]}, 200, "MNIST, 20 sigmoid units, 200 steps"),
    "mnist-20-relu-100": ({"hidden_sizes": [20], "activation": "relu"}, 100, "MNIST, 20 ReLU units, 100 steps"),
}
"""The paper's MNIST panels (Figure 4 and 5): task overrides, steps, title."""


def single_panel(spec: dict, steps: int) -> dict[str, tuple[dict, int, str]]:
    """One panel: the task ``spec`` (quadratics evaluated one function per problem) run for ``steps`` steps."""
    if spec["name"] == "quadratic":
        spec = {**spec, "num_functions": 1}  # each function is evaluated on its own
    return {spec["name"]: (spec, steps, f"{spec['name']}: {json.dumps(spec)}")}


def run_suite(network: CoordinatewiseLSTM, panels: dict[str, tuple[dict, int, str]], protocol: dict, out: Path,
              command: str) -> None:
    """Compare ``network`` with tuned baselines on each panel ``name -> (task spec, steps, title)``.

    Writes each panel's JSON and figure, and ``out/README.md`` with every table and figure; ``command``
    is the command line that regenerates them.
    """
    index = []
    for name, (spec, steps, title) in panels.items():
        summaries = compare(
            network, make_task(spec, "test", heldout_split="test"), steps, protocol["problems"],
            protocol["tuning_problems"],
        )
        splits = ("minibatches from the 10,000 MNIST test images, which meta-training and validation never see; "
                  "test-set loss = loss of the final parameters on all 10,000 of them"
                  if spec["name"] == "mnist" else "synthetic problems drawn from evaluation seeds")
        info = {"task": spec, "steps": steps, "problems": protocol["problems"],
                "tuning_problems": protocol["tuning_problems"], "splits": splits,
                "command": command}
        table = write_results(summaries, out, name, title, info)
        print(f"\n{title} ({protocol['problems']} problems; lr tuned on {protocol['tuning_problems']} others)")
        print(table)
        index.append(f"### {title}\n\n{table}\n\n![{title}]({name}.png)\n")
    (out / "README.md").write_text(
        f"# Evaluation: {len(panels)} panel{'s' * (len(panels) > 1)}\n\nRegenerate with `{command}`.\n\n"
        f"Each panel: {protocol['problems']} fresh problems; baselines' learning rates tuned on "
        f"{protocol['tuning_problems']} other problems over a log grid from 1e-4 to 10, separately for `final` "
        "(mean loss over the last 10 steps) and `sum` (sum over all steps); `loss@t` is the (minibatch) loss "
        f"computed at step t; ± is the standard error. Data: {splits}.\n\n" + "\n".join(index))
    print(f"\nresults written to {out}/")
