"""Networks against each other on the same problems: ablations of a meta-training recipe, chosen on validation.

    python benchmarks/compare_networks.py --networks l2o-generalist l2o-generalist+scale_rate=0.01 RUN/best
        [--suite generalist] [--panels mnist-20-relu-100 ...] [--tasks mnist-mlps:100 ...] [--split validation]
        [--problems 20]

Each network is a checkpoint (bundled name, folder, Hub repo id) with optional ``+key=value`` changes: of its
run-time options, ``scale_rate`` (step-scale control bolted on,
:meth:`~learned_optim.CoordinatewiseLSTM.with_scale_rate`) and ``nominal`` (a nominal Adam term added,
:meth:`~learned_optim.CoordinatewiseLSTM.with_nominal`); of how it is applied, ``lr`` (a constant scale of its
step), ``groups=tensor`` (every parameter its own group, so a step-scale controller per tensor) and
``lr_decay=cosine`` (``lr`` decayed to 0 over the run by ``LambdaLR``, stepped after each step).
Every network runs as ``LearnedOptimizer(params, network, total_steps=steps)`` (so changed) on the same problems of
each panel (those ``evaluate`` draws for the split: common random numbers): the suite's ``--panels`` and, with ``--tasks
NAME:STEPS``, problems of a task family as it is meta-trained on (its validation data with ``--split validation``);
NAME may also be a task spec in JSON, such as ``'{"name": "art", "style": "family", "size": 128}:128'`` (the
validation photos in styles made of one another). Printed per panel and network: the mean final loss (mean of the
last 10 steps), the mean over problems of log(final / the first network's final) with its standard error (negative:
better than the first network), the largest such ratio, and how many runs end below their start. Needs the data of
the tasks named (MNIST, the art folder).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

from torch.optim.lr_scheduler import LambdaLR

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.metrics import METRICS
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import SUITES, suite_panels
from learned_optim.meta.tasks import seeded

import _report as report  # benchmarks/_report.py, beside this script

NETWORK_CHANGES = {"scale_rate": lambda network, value: network.with_scale_rate(float(value)),
                   "nominal": lambda network, value: network.with_nominal(float(value))}
OPTIMIZER_CHANGES = {"lr": float, "groups": ["tensor"].index, "lr_decay": ["cosine"].index}
"""The ``+key=value`` changes a network name may carry: of the network, and of the optimizer that applies it (each a
check of its value)."""


def load_variant(name: str) -> tuple[CoordinatewiseLSTM, dict[str, str]]:
    """``CHECKPOINT[+key=value...]``: the checkpoint with its :data:`NETWORK_CHANGES`, and its
    :data:`OPTIMIZER_CHANGES`."""
    checkpoint, *changes = name.split("+")
    network, options = pretrained.load(checkpoint), {}
    for change in changes:
        key, _, value = change.partition("=")
        try:
            if key in NETWORK_CHANGES:
                network = NETWORK_CHANGES[key](network, value)
            else:
                OPTIMIZER_CHANGES[key](value)
                options[key] = value
        except (KeyError, ValueError):
            raise SystemExit(f"cannot apply {change!r} of {name!r}: use +KEY=VALUE with KEY one of "
                             f"{[*NETWORK_CHANGES, *OPTIMIZER_CHANGES]}, scale_rate, nominal and lr numbers, "
                             "groups=tensor, lr_decay=cosine") from None
    return network, options


def optimizer_factory(network: CoordinatewiseLSTM, options: dict[str, str], steps: int):
    """Makes ``LearnedOptimizer(params, network, total_steps=steps)`` with the :data:`OPTIMIZER_CHANGES`."""
    def make(params):
        groups = [{"params": [p]} for p in params] if options.get("groups") == "tensor" else params
        optimizer = LearnedOptimizer(groups, network, total_steps=steps, lr=float(options.get("lr", 1.0)))
        if options.get("lr_decay") == "cosine":
            schedule = LambdaLR(optimizer, lambda t: (1 + math.cos(math.pi * min(t / steps, 1.0))) / 2)
            optimizer.register_step_post_hook(lambda *_: schedule.step())
        return optimizer
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", required=True, metavar="CHECKPOINT[+KEY=VALUE]")
    parser.add_argument("--suite", choices=list(SUITES), default="generalist")
    parser.add_argument("--panels", nargs="*", default=[], metavar="PANEL")
    parser.add_argument("--tasks", nargs="*", default=[], metavar="NAME:STEPS")
    parser.add_argument("--split", choices=["test", "validation"], default="validation")
    parser.add_argument("--problems", type=int, default=20)
    args = report.parse_args(parser)
    if args.problems < 2:
        parser.error(f"--problems must be at least 2 (for a standard error), got {args.problems}")
    family = SUITES[args.suite][0]
    panels = {name: (panel.spec, panel.steps) for name, panel in
              suite_panels(args.suite, DEFAULTS[family]["task"]).items()}
    unknown = sorted(set(args.panels) - set(panels))
    if unknown:
        parser.error(f"unknown panels {unknown} of suite {args.suite}; choose from {sorted(panels)}")
    chosen = {name: panels[name] for name in args.panels}
    for entry in args.tasks:
        name, _, steps = entry.rpartition(":")
        try:
            spec = json.loads(name) if name.startswith("{") else {"name": name}
        except json.JSONDecodeError:
            spec = {}
        if not isinstance(spec, dict) or spec.get("name") not in DEFAULTS or not steps.isdigit():
            parser.error(f"--tasks takes NAME:STEPS with NAME one of {sorted(DEFAULTS)} or a JSON task spec "
                         f"{{\"name\": NAME, ...}}, got {entry!r}")
        chosen[f"{name} (its meta-training distribution)"] = (spec, int(steps))
    if not chosen:
        parser.error("name at least one of --panels or --tasks")
    networks = {name: load_variant(name) for name in args.networks}
    print(f"{args.problems} problems of the {args.split} split per panel; ratios against {args.networks[0]}")
    print("| panel | network | final (mean of last 10) | log(final / first's), paired | largest ratio | "
          "ends below start |")
    print("|---|---|---|---|---|---|")
    for panel, (spec, steps) in chosen.items():
        task = make_task(spec, args.split)
        problems = [task.sample(seeded(EVALUATION_SEED + i)) for i in range(args.problems)]
        first = None
        for name, (network, options) in networks.items():
            runs = [run_optimizer(p, optimizer_factory(network, options, steps), steps).losses for p in problems]
            finals = [METRICS["final"](run) for run in runs]
            below = sum(run[-1] < run[0] for run in runs)
            first = first or finals
            ratios = [math.log(a / b) for a, b in zip(finals, first)]
            paired = (f"{statistics.mean(ratios):+.4f} ± {statistics.stdev(ratios) / len(ratios) ** 0.5:.4f}"
                      if finals is not first else "–")
            print(f"| {panel} | {name} | {statistics.mean(finals):.4g} | {paired} | {math.exp(max(ratios)):.3f} | "
                  f"{below} / {len(runs)} |", flush=True)


if __name__ == "__main__":
    report.run(main)
