"""Compare a learned optimizer with tuned hand-designed ones, through the ``torch.optim`` interface.

Baselines (SGD, NAG, RMSprop, Adam, other hyperparameters at torch defaults) get their learning rate
tuned on a log grid (:data:`LR_GRID`: 1e-4 to 10, three points per decade) over separate tuning
problems; the best rate for each reported metric is picked, then every optimizer runs on the same
fresh evaluation problems. The learned optimizer runs as :class:`~learned_optim.LearnedOptimizer`, told the number of
steps (``total_steps``, which only networks with progress inputs read).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from ..network import CoordinatewiseLSTM
from ..optimizer import LearnedOptimizer
from .metrics import METRICS
from .tasks import Problem, Task, seeded

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

LR_GRID = [10 ** (k / 3) for k in range(-12, 4)]
"""Learning rates tried for each baseline: 1e-4, 2.2e-4, 4.6e-4, 1e-3, ..., 4.6, 10."""

BASELINES: dict[str, Callable[[list[torch.Tensor], float], torch.optim.Optimizer]] = {
    "SGD": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "NAG": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "RMSprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "Adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
TUNING_SEED = 2_000_000_011
EVALUATION_SEED = 3_000_000_019
"""Tuning and evaluation problems are drawn from seed streams disjoint from meta-training's."""


@dataclass
class Trajectory:
    """The losses of one run, the held-out loss of its final parameters (if the task has one) and those
    parameters (None if it diverged)."""

    losses: list[float]
    heldout_loss: float | None = None
    params: dict[str, torch.Tensor] | None = None


def run_optimizer(problem: Problem, make_optimizer: OptimizerFactory, steps: int) -> Trajectory:
    """Optimize ``problem`` for ``steps`` steps in an ordinary training loop.

    ``losses[t]`` is :math:`f(\\theta_t, t)`, the loss computed at step ``t`` before its update.
    A diverged run (non-finite loss) stops, and its remaining losses are reported as ``inf``.
    """
    params = {name: p.detach().clone().requires_grad_() for name, p in problem.params.items()}
    optimizer = make_optimizer(list(params.values()))
    losses: list[float] = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = problem.loss(params, step)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            return Trajectory(losses[:-1] + [math.inf] * (steps - step), math.inf)
        loss.backward()
        optimizer.step()
    heldout = None
    if problem.heldout_loss is not None:
        with torch.no_grad():
            heldout = float(problem.heldout_loss(params))
    return Trajectory(losses, heldout, {name: p.detach() for name, p in params.items()})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _log_stage(line: str, started: float) -> None:
    """One line per finished stage of an evaluation, with its wall-clock, in a redirected log (on a terminal tqdm's
    bars show the progress): as meta-training's one line per validation."""
    if not sys.stderr.isatty():
        print(f"{line} ({time.perf_counter() - started:.0f} s)", flush=True)


@dataclass
class Summary:
    """Mean results of one optimizer over the evaluation problems, and each problem's ``final`` metric
    (``problem_finals``, at the ``final`` metric's learning rate) for per-problem comparisons."""

    name: str
    learning_rates: dict[str, float | None]
    mean_curve: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    runs: list[Trajectory] = field(default_factory=list, repr=False)  # per problem, at the `final` metric's lr
    problem_finals: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "learning_rates": self.learning_rates, "metrics": self.metrics,
                "mean_curve": self.mean_curve, "problem_finals": self.problem_finals}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """A summary as :meth:`to_json` wrote it (without the per-problem runs; older files also without
        ``problem_finals``)."""
        return cls(data["name"], data["learning_rates"], data["mean_curve"], data["metrics"],
                   problem_finals=data.get("problem_finals", []))


def summarize(name: str, runs_by_metric: dict[str, list[Trajectory]],
              learning_rates: dict[str, float | None]) -> Summary:
    """Mean curve and metrics; each metric taken from the runs tuned for it."""
    reference = runs_by_metric["final"]
    steps = len(reference[0].losses)
    curve = [_mean([run.losses[t] for run in reference]) for t in range(steps)]
    metrics = {f"loss@{t}": curve[t - 1] for t in sorted({20, 40, steps}) if t <= steps}
    for metric, runs in runs_by_metric.items():
        values = [METRICS[metric](run.losses) for run in runs]
        metrics[metric] = _mean(values)
        metrics[f"{metric}_stderr"] = _stderr(values)
    heldout = [run.heldout_loss for run in reference if run.heldout_loss is not None]
    if heldout:
        metrics["heldout"] = _mean(heldout)
    return Summary(name, learning_rates, curve, metrics, reference, [METRICS["final"](run.losses) for run in reference])


def _stderr(values: list[float]) -> float:
    if len(values) < 2 or not all(map(math.isfinite, values)):
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def lr_scores(
    make: Callable[[list[torch.Tensor], float], torch.optim.Optimizer], problems: list[Problem], steps: int,
    metrics: dict[str, Callable[[list[float]], float]] = METRICS, description: str = "",
    lr_grid: list[float] = LR_GRID,
) -> dict[str, dict[float, float]]:
    """Per metric of ``metrics`` and learning rate of ``lr_grid``: the metric's mean over ``problems``, each
    optimized ``steps`` steps (a progress bar named by ``description`` on a terminal)."""
    from tqdm.auto import tqdm

    scores = {metric: {} for metric in metrics}
    for lr in tqdm(lr_grid, desc=f"tuning {description}", unit="lr", leave=False, disable=None):
        runs = [run_optimizer(problem, functools.partial(make, lr=lr), steps) for problem in problems]
        for metric, fn in metrics.items():
            scores[metric][lr] = _mean([fn(run.losses) for run in runs])
    return scores


def tune(
    make: Callable[[list[torch.Tensor], float], torch.optim.Optimizer], problems: list[Problem], steps: int,
    description: str = "", lr_grid: list[float] = LR_GRID,
) -> dict[str, float]:
    """The learning rate of ``lr_grid`` minimizing each metric's mean over ``problems`` (:func:`lr_scores`)."""
    scores = lr_scores(make, problems, steps, METRICS, description, lr_grid)
    return {metric: min(by_lr, key=lambda lr: (by_lr[lr], lr)) for metric, by_lr in scores.items()}


def run_again(measured: Summary, problems: list[Problem], steps: int) -> list[Trajectory]:
    """A baseline read from an earlier evaluation (which keeps no runs) run again on ``problems`` at its ``final``
    learning rate."""
    make = functools.partial(BASELINES[measured.name], lr=measured.learning_rates["final"])
    return [run_optimizer(problem, make, steps) for problem in problems]


PROBLEMS_MATCH = 1e-2
"""How close (relative) a measured baseline's mean final loss, run again, must come to the one recorded."""


def with_problem_finals(measured: list[Summary], problems: list[Problem], steps: int) -> list[Summary]:
    """``measured`` baselines, the best (by final loss) with each problem's final loss: from the earlier evaluation,
    or, where it kept none (evaluations before they were recorded), by running that baseline again on ``problems``
    at its ``final`` learning rate. The rerun's mean must be the recorded one (within :data:`PROBLEMS_MATCH`):
    a check that these are the problems the baselines were measured on."""
    best = min(measured, key=lambda summary: summary.metrics["final"])
    if best.problem_finals:
        return measured
    runs = run_again(best, problems, steps)
    finals = [METRICS["final"](run.losses) for run in runs]
    if not math.isclose(_mean(finals), best.metrics["final"], rel_tol=PROBLEMS_MATCH):
        raise ValueError(f"{best.name} at lr {best.learning_rates['final']:.3g}, run again on these problems, ends "
                         f"at {_mean(finals):.6g} where the earlier evaluation recorded {best.metrics['final']:.6g}: "
                         "its problems were not these; evaluate without --baselines-from")
    return [replace(summary, runs=runs, problem_finals=finals) if summary is best else summary
            for summary in measured]


def compare(
    network: CoordinatewiseLSTM,
    task: Task,
    steps: int,
    num_problems: int,
    num_tuning_problems: int,
    baselines: dict[str, Callable] = BASELINES,
    tuning_task: Task | None = None,
    lr_grid: list[float] = LR_GRID,
    measured_baselines: list[Summary] | None = None,
    tuned_rates: dict[str, dict[str, float]] | None = None,
) -> list[Summary]:
    """Tune every baseline over ``lr_grid`` on ``num_tuning_problems`` problems of ``tuning_task`` (default:
    ``task``), then run all optimizers on the same ``num_problems`` fresh problems of ``task``. With
    ``measured_baselines`` (the summaries of an earlier comparison with the same problems and grid) only the
    learned optimizer runs, and they are its baselines (:func:`with_problem_finals`). With ``tuned_rates``
    (baseline -> metric -> learning rate, as an earlier comparison's tuning chose them) the baselines are not tuned
    again but run at those rates."""
    problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(num_problems)]
    tuning_source = tuning_task or task
    tuning = [tuning_source.sample(seeded(TUNING_SEED + i)) for i in range(num_tuning_problems)]
    from tqdm.auto import tqdm

    started = time.perf_counter()
    learned = [run_optimizer(p, lambda params: LearnedOptimizer(params, network, total_steps=steps), steps)
               for p in tqdm(problems, desc="LSTM", unit="problem", leave=False, disable=None)]
    summaries = [summarize("LSTM", {metric: learned for metric in METRICS}, {m: None for m in METRICS})]
    _log_stage(f"LSTM: {num_problems} problems, final {summaries[0].metrics['final']:.4g}", started)
    if measured_baselines is not None:
        started = time.perf_counter()
        summaries += with_problem_finals(measured_baselines, problems, steps)
        _log_stage(f"baselines read from an earlier evaluation: {', '.join(s.name for s in summaries[1:])}", started)
        return summaries
    for name, make in baselines.items():
        if tuned_rates is not None:
            best = tuned_rates[name]
        else:
            started = time.perf_counter()
            best = tune(make, tuning, steps, name, lr_grid)
            _log_stage(f"{name}: tuned on {num_tuning_problems} problems over {len(lr_grid)} rates, lr "
                       + ", ".join(f"{lr:.3g} for {metric}" for metric, lr in best.items()), started)
        started = time.perf_counter()
        runs = {lr: [run_optimizer(p, functools.partial(make, lr=lr), steps)
                     for p in tqdm(problems, desc=f"{name} lr {lr:.3g}", unit="problem", leave=False, disable=None)]
                for lr in set(best.values())}
        summaries.append(summarize(name, {metric: runs[lr] for metric, lr in best.items()}, best))
        _log_stage(f"{name}: {num_problems} problems, final {summaries[-1].metrics['final']:.4g}", started)
    return summaries


