"""Your own learned optimizer in three lines: fine-tune a generalist network on your task for the number of steps
you will train, within a wall-clock budget, and compare it with Adam tuned on the same task::

    from learned_optim.meta import fit
    result = fit(make_task, "runs/mine", horizon=200, budget="5m")
    print(result.table())  # the fine-tuned network against tuned Adam, at the horizon and at twice it

``make_task(split)`` returns the task (a :class:`~learned_optim.meta.tasks.ModuleTask` of your model, data and loss)
whose minibatches come from ``split`` (``"train"``, ``"validation"`` or ``"test"``): the function
``train --task-module`` takes. Both use one recipe (:func:`training_options`): ``l2o-generalist-2``
(the network the recipe was chosen with; it fine-tunes further in the same minutes than the default network, which
adds a nominal term) fine-tuned with its step-scale control in the loop, on whole episodes of the horizon, validated
against tuned Adam at every validation, the best network kept.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..network import CoordinatewiseLSTM
from .evaluation import BASELINES, Summary, compare
from .tasks import Task
from .tasks.registry import DEFAULTS
from .train import Run, RunConfig, train

LONGEST_UNROLL = 200
"""The longest unroll (meta-gradient through one stretch of steps) the recipe takes: horizons up to it are one
unroll, whole episodes as the generalist was fine-tuned; longer ones are cut into equal unrolls no longer than it and
reached through a curriculum of doubling horizons."""

UNITS = {"s": 1, "m": 60, "h": 3600}
BUDGET_EPISODES = 1_000_000
"""The most episodes a budget may size a run to when no ``episodes`` is given: no limit in practice."""


def parse_duration(text: str | float) -> float:
    """Seconds in ``90``, ``"90s"``, ``"10m"`` or ``"1.5h"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text))
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"invalid duration {text!r}: give a positive number of seconds, minutes or hours, such as "
                         "90s, 10m or 1.5h")
    return float(match[1]) * UNITS[match[2] or "s"]


def horizon_options(horizon: int) -> dict[str, Any]:
    """``horizon``, ``unroll`` and ``curriculum`` for training to ``horizon`` steps: one unroll up to
    :data:`LONGEST_UNROLL` steps; beyond, equal unrolls no longer than it and a curriculum that doubles from the
    longest single unroll's horizon to ``horizon``."""
    if horizon < 1:
        raise ValueError(f"invalid horizon {horizon}: the number of steps you will train for, at least 1")
    if horizon <= LONGEST_UNROLL:
        return {"horizon": horizon, "unroll": horizon, "curriculum": None}
    stages = [horizon]
    while stages[0] // 2 >= LONGEST_UNROLL // 2:
        stages.insert(0, stages[0] // 2)
    return {"horizon": horizon, "unroll": math.ceil(horizon / math.ceil(horizon / LONGEST_UNROLL)),
            "curriculum": stages}


def training_options(horizon: int) -> dict[str, Any]:
    """The fine-tuning recipe for a task of your own, training to ``horizon`` steps: the ``module`` family's defaults
    (:data:`~learned_optim.meta.tasks.registry.DEFAULTS`) with :func:`horizon_options`."""
    return {**DEFAULTS["module"]["training"], **horizon_options(horizon)}


def run_config(task_spec: dict[str, Any], horizon: int, **overrides: Any) -> RunConfig:
    """The :class:`~learned_optim.meta.train.RunConfig` of :func:`training_options` and any ``overrides`` (Recipe or
    RunConfig fields), fine-tuning the network it starts from (``init``: any checkpoint) as it is."""
    return RunConfig.from_options(task_spec, {**training_options(horizon), **overrides})


@dataclass
class Fitted:
    """What :func:`fit` returns: the run, its best network and the comparison on test problems."""

    run: Run
    network: CoordinatewiseLSTM
    comparison: dict[int, list[Summary]]  # steps -> [the learned optimizer, the tuned baseline]

    @property
    def checkpoint(self) -> Path:
        """The best network's checkpoint folder: ``LearnedOptimizer(params, pretrained=result.checkpoint)``."""
        return self.run.best_path

    def table(self) -> str:
        """The comparison as a Markdown table: final losses (mean of the last steps, ± standard error) and ratios."""
        rows = ["| steps | learned optimizer | tuned baseline (lr) | ratio |", "|---|---|---|---|"]
        for steps, (learned, baseline) in self.comparison.items():
            mine, theirs = learned.metrics["final"], baseline.metrics["final"]
            rows.append(f"| {steps} | {mine:.4g} ± {learned.metrics['final_stderr']:.2g} | {baseline.name} "
                        f"{theirs:.4g} ± {baseline.metrics['final_stderr']:.2g} "
                        f"({baseline.learning_rates['final']:.3g}) | {mine / theirs:.2f} |")
        return "\n".join(rows)


def fit(make_task: Callable[[str], Task] | Task, folder: str | os.PathLike, horizon: int = 100,
        budget: str | float | None = "10m", baseline: str = "Adam", problems: int = 20, progress: bool = True,
        **overrides: Any) -> Fitted:
    """Fine-tune ``l2o-generalist-2`` on ``make_task``'s problems into ``folder`` (resumed if it holds this run) for
    ``horizon`` steps within ``budget`` (seconds or ``"10m"``-style; meta-training and validation), then compare its
    best network with ``baseline`` tuned on validation problems, on ``problems`` test problems, at ``horizon`` and
    ``2 * horizon`` steps.

    ``make_task``: a function of the split (``"train"``, ``"validation"``, ``"test"``) returning a task, or one task
    for all three (its problems still differ: each split draws its own seeds). ``overrides``: Recipe or RunConfig
    fields (``meta_lr``, ``meta_batch``, ``episodes``: the most the budget may size to, ``init``: the network to
    start from, fine-tuned with its own config, ...).
    """
    tasks = {split: make_task if isinstance(make_task, Task) else make_task(split)
             for split in ("train", "validation", "test")}
    for split, task in tasks.items():
        if not isinstance(task, Task):
            raise ValueError(f"make_task({split!r}) returned {type(task).__name__}; it must return a "
                             "learned_optim.meta.tasks.Task, such as a ModuleTask(model_factory, sample_batch)")
    name = getattr(make_task, "__qualname__", None) if not isinstance(make_task, Task) else None
    reference = f"{make_task.__module__}:{name}" if name else None
    budget_s = parse_duration(budget) if budget is not None else None
    options = {"validation_baseline": baseline, "budget_s": budget_s}
    if budget_s is not None:
        options["episodes"] = BUDGET_EPISODES  # the budget sizes the run
    config = run_config({"name": "module", "reference": reference}, horizon, **{**options, **overrides})
    run = train(config, folder, resume=True, progress=progress, task=tasks["train"],
                validation_task=tasks["validation"])
    network = run.best_network()
    comparison = {steps: compare(network, tasks["test"], steps, problems, max(2, problems // 2),
                                 {baseline: BASELINES[baseline]}, tuning_task=tasks["validation"])
                  for steps in (horizon, 2 * horizon)}
    return Fitted(run, network, comparison)
