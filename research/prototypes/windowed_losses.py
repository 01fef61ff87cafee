"""Prototype: does a run climb back? The mean loss over windows of 500 steps of each test problem of a suite panel.

    python research/prototypes/windowed_losses.py mnist-20-sigmoid-10000 3 runs/nominal-0.003-ft/best l2o-generalist-2

(the problems ``evaluate --suite generalist`` draws for the panel on the test split; one line per network and problem).
"""

from __future__ import annotations

import sys

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.suites import SUITES, suite_panels
from learned_optim.meta.tasks import seeded
from learned_optim.meta.tasks.registry import DEFAULTS, make_task

WINDOW = 500

if __name__ == "__main__":
    name, problems, networks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    panel = suite_panels("generalist", DEFAULTS[SUITES["generalist"][0]]["task"])[name]
    task = make_task(panel.spec, "test", heldout_split="test")
    for checkpoint in networks:
        network = pretrained.load(checkpoint)
        for i in range(problems):
            losses = run_optimizer(task.sample(seeded(EVALUATION_SEED + i)),
                                   lambda params: LearnedOptimizer(params, network, total_steps=panel.steps),
                                   panel.steps).losses
            windows = [sum(losses[k:k + WINDOW]) / len(losses[k:k + WINDOW]) for k in range(0, panel.steps, WINDOW)]
            print(checkpoint, i, " ".join(f"{w:.3g}" for w in windows), flush=True)
