"""Evaluation suites: panels of tasks on which a network meets tuned baselines, written as a report.

A suite is ``name -> Panel``; :func:`run_suite` runs :func:`~learned_optim.meta.evaluation.compare` on each
panel and writes the JSON, the figures and a ``README.md`` (a summary against the best tuned baseline, then every
panel's table and figure) that ``publish`` embeds in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from ..network import CoordinatewiseLSTM
from .evaluation import BASELINES, LR_GRID, Summary, compare
from .metrics import FINAL_STEPS
from .tasks.registry import make_task
from .reporting import data_description, summary_row, write_image_grid, write_results


class Panel(NamedTuple):
    """One comparison: the task (in a suite, overrides of the suite's family's task, or a whole spec with a
    ``"name"``), the steps, a title, and overrides of the family's protocol (``problems``, ``tuning_problems``,
    ``lr_grid``) where a panel is too costly for it."""

    spec: dict[str, Any]
    steps: int
    title: str
    protocol: dict[str, Any] = {}


MNIST_PANELS = {
    "mnist-20-sigmoid-100": Panel({"hidden_sizes": [20]}, 100, "MNIST, 20 sigmoid units, 100 steps"),
    "mnist-40-sigmoid-100": Panel({"hidden_sizes": [40]}, 100, "MNIST, 40 sigmoid units, 100 steps"),
    "mnist-2x20-sigmoid-100": Panel({"hidden_sizes": [20, 20]}, 100, "MNIST, 2 hidden layers of 20, 100 steps"),
    "mnist-20-sigmoid-200": Panel({"hidden_sizes": [20]}, 200, "MNIST, 20 sigmoid units, 200 steps"),
    "mnist-20-relu-100": Panel({"hidden_sizes": [20], "activation": "relu"}, 100, "MNIST, 20 ReLU units, 100 steps"),
}
"""The paper's MNIST panels (Figure 4 and 5)."""
NEURAL_ART_PANELS = {
    "art-starry-night-64": Panel({"style": "starry_night.jpg", "size": 64}, 128,
                                 "Neural art: training style (The Starry Night), 64x64"),
    "art-ihc-128": Panel({"style": "ihc.png", "size": 128}, 128, "Neural art: new style (IHC micrograph), 128x128"),
    "art-hubble-128": Panel({"style": "hubble_deep_field.jpg", "size": 128}, 128,
                            "Neural art: new style (Hubble deep field), 128x128"),
    "art-mosaic-128": Panel({"style": "mosaic", "size": 128}, 128, "Neural art: new style (generated mosaic), 128x128"),
}
"""The paper's neural-art tests (Figure 8): held-out photos with the training style at the training size, and
with new styles at double the size: the style family's held-out styles (``art.HELD_OUT_STYLES``), which
meta-training and selection never draw."""
_COARSE_GRID = [10 ** (k / 2) for k in range(-6, 1)]  # 1e-3 .. 1 by half-decades: the best rates on these tasks
GENERALIST_PANELS = {
    "mnist-20-relu-100": Panel({"hidden_sizes": [20], "activation": "relu"}, 100,
                               "MNIST MLP, 20 ReLU units (paper init), 100 steps"),
    "mnist-2x20-sigmoid-100": Panel({"hidden_sizes": [20, 20]}, 100,
                                    "MNIST MLP, 2 hidden layers of 20 sigmoid, 100 steps"),
    "mnist-convnet-100": Panel({"name": "mnist-convnet"}, 100, "The paper's CIFAR ConvNet on MNIST, 100 steps",
                               {"problems": 5, "tuning_problems": 2, "lr_grid": _COARSE_GRID}),
    "mnist-20-sigmoid-1000": Panel({"hidden_sizes": [20]}, 1000, "MNIST MLP, 20 sigmoid units, 1,000 steps",
                                   {"problems": 10, "tuning_problems": 3, "lr_grid": _COARSE_GRID}),
    "mnist-20-sigmoid-10000": Panel({"hidden_sizes": [20]}, 10_000, "MNIST MLP, 20 sigmoid units, 10,000 steps",
                                    {"problems": 3, "tuning_problems": 1, "lr_grid": _COARSE_GRID}),
    "mnist-logreg-100": Panel({"hidden_sizes": []}, 100, "MNIST logistic regression, 100 steps"),
    "mnist-20-relu-b32-500": Panel({"hidden_sizes": [20], "activation": "relu", "batch_size": 32}, 500,
                                   "MNIST MLP, 20 ReLU units, batch 32, 500 steps",
                                   {"problems": 10, "tuning_problems": 3, "lr_grid": _COARSE_GRID}),
    "text-lm-300": Panel({"name": "text-lm"}, 300, "Byte-level Transformer on Python source (1 block, width 32), "
                         "300 steps", {"problems": 5, "tuning_problems": 2, "lr_grid": _COARSE_GRID}),
}
"""A generalist default's tests: architectures, activations, batch sizes, horizons and a language model beyond one
training task (none of them a configuration a training family draws); baselines tuned for each panel's horizon."""
SUITES = {"mnist-paper": ("mnist", MNIST_PANELS), "neural-art": ("art", NEURAL_ART_PANELS),
          "generalist": ("mnist", GENERALIST_PANELS)}
"""Suite name -> (task family, panels)."""


def single_panel(spec: dict, steps: int) -> dict[str, Panel]:
    """One panel: the task ``spec`` (quadratics evaluated one function per problem) run for ``steps`` steps."""
    if spec["name"] == "quadratic":
        spec = {**spec, "num_functions": 1}  # each function is evaluated on its own
    return {spec["name"]: Panel(spec, steps, f"{spec['name']}: {json.dumps(spec)}")}


def suite_panels(suite: str, family_spec: dict[str, Any]) -> dict[str, Panel]:
    """The panels of ``suite`` with whole task specs: each panel's overrides of ``family_spec``, or its own spec."""
    return {name: panel._replace(spec=panel.spec if "name" in panel.spec else {**family_spec, **panel.spec})
            for name, panel in SUITES[suite][1].items()}


def run_suite(network: CoordinatewiseLSTM, panels: dict[str, Panel], protocol: dict, out: Path, command: str,
              baselines_from: Path | None = None) -> None:
    """Compare ``network`` with tuned baselines on each panel.

    ``protocol``: ``problems``, ``tuning_problems``, and optionally ``split`` (the data the problems come from:
    ``"test"``, the default, for a report, ``"validation"`` for choosing between networks), ``tuning_split`` (the
    data split the baselines are tuned on; default: the evaluation's), ``lr_grid`` (default: :data:`LR_GRID`) and
    ``baselines`` (names of :data:`~learned_optim.meta.evaluation.BASELINES`; default: all, none to compare
    networks alone), each overridden by a panel's own. Writes each panel's JSON and figure (and, for neural art
    with a baseline, an image grid), and ``out/README.md``
    with a summary against the best tuned baseline and every table and figure; ``command`` is the command line
    that regenerates them. With ``baselines_from``, an earlier evaluation's folder, the baselines are taken from
    its panels (:func:`measured_baselines`) instead of being tuned and run again (those it lacks are tuned; a neural
    art panel's image grid runs the best one again on the grid's problems).
    """
    index, summary_rows, sources = [], [], {}
    for name, (spec, steps, title, overrides) in panels.items():
        panel_protocol = {**protocol, **overrides}
        grid = panel_protocol.get("lr_grid", LR_GRID)
        split = panel_protocol.get("split", "test")
        task = make_task(spec, split, heldout_split=split)
        tuning_task = make_task(spec, panel_protocol["tuning_split"]) if "tuning_split" in panel_protocol else None
        problems, tuning_problems = panel_protocol["problems"], panel_protocol["tuning_problems"]
        splits = data_description(spec["name"], task, split)
        sources.setdefault(splits, []).append(title)
        info = {"task": spec, "steps": steps, "problems": problems, "tuning_problems": tuning_problems, "split": split,
                "tuning_split": panel_protocol.get("tuning_split", split), "lr_grid": grid, "splits": splits,
                "command": command}
        measured = None
        if baselines_from is not None:
            measured = measured_baselines(Path(baselines_from) / f"{name}.json", info)
            if measured is not None:
                info["baselines_from"] = str(baselines_from)
        baselines = {key: BASELINES[key] for key in panel_protocol.get("baselines", BASELINES)}
        if measured is not None:
            measured = [summary for summary in measured if summary.name in baselines]
        summaries = compare(network, task, steps, problems, tuning_problems, baselines=baselines,
                            tuning_task=tuning_task, lr_grid=grid, measured_baselines=measured)
        table = write_results(summaries, out, name, title, info)
        setting = (f"{problems} problems; baselines' learning rates tuned on {tuning_problems} other"
                   f"{'s' * (tuning_problems > 1)} over "
                   f"{len(grid)} rates from {min(grid):.3g} to {max(grid):.3g}"
                   + (f" (the baselines' results are those measured in `{baselines_from}`)" if measured else "")
                   if baselines else f"{problems} problems; no baseline")
        print(f"\n{title} ({setting})")
        print(table)
        index.append(f"### {title}\n\n{setting}.\n\n{table}\n\n![{title}]({name}.png)\n")
        summary_rows.append(summary_row(title, summaries))
        if spec["name"] == "art" and len(summaries) > 1:
            write_image_grid(task, summaries, steps, out / f"{name}-images.png", title)
            index.append(f"![{title}: images]({name}-images.png)\n")
    summary = "\n".join(["| panel | LSTM final | best tuned baseline final | LSTM / best | LSTM below best on | "
                          "LSTM ends below its start |", "|---|---|---|---|---|---|", *summary_rows])
    print(f"\n{summary}")
    (out / "README.md").write_text(
        f"# Evaluation: {len(panels)} panel{'s' * (len(panels) > 1)}\n\nRegenerate with `{command}`.\n\n"
        "Each panel: fresh problems; baselines' learning rates tuned on other problems over a log grid, "
        f"separately for `final` (mean loss over the last {FINAL_STEPS} steps) and `sum` (sum over all steps); "
        "`loss@t` is the "
        f"(minibatch) loss computed at step t; ± is the standard error. Data{_data_lines(sources)}\n\n{summary}\n\n"
        + "\n".join(index))
    print(f"\nresults written to {out}/")


def _data_lines(sources: dict[str, list[str]]) -> str:
    """Where the panels' problems come from (``sources``: description -> the titles of its panels), after "Data":
    one description, or a list of each with its panels."""
    if len(sources) == 1:
        return f": {next(iter(sources))}."
    return ":\n\n" + "\n".join(f"- {'; '.join(titles)}: {source}." for source, titles in sources.items())


PANEL_SETTINGS = ("task", "steps", "problems", "tuning_problems", "split", "tuning_split", "lr_grid")
"""What makes two evaluations of a panel comparable: the same problems, the same tuning and grid."""


def measured_baselines(path: Path, info: dict[str, Any]) -> list[Summary] | None:
    """The baselines' summaries in an earlier evaluation's panel ``path``, checked to have been measured with the
    panel settings in ``info`` (the same problems, tuning and grid: common random numbers); None where that
    evaluation has no such panel (its baselines are then tuned and run here)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--baselines-from: {path.parent} does not exist; point at the folder of an earlier "
                                "evaluation, or evaluate without --baselines-from")
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    settings = {key: earlier.get(key) for key in PANEL_SETTINGS}
    differing = {key: (settings[key], info[key]) for key in PANEL_SETTINGS if settings[key] != info[key]}
    if differing:
        raise ValueError(f"--baselines-from: {path} was measured with other settings (earlier, now): {differing}; "
                         "evaluate with the same problems and grid, or without --baselines-from")
    return [Summary.from_json(result) for result in earlier["results"] if result["name"] != "LSTM"]


