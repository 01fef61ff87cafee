"""Prototype: the step-scale controller's scale over a run, beside the loss, on validation problems.

    python research/prototypes/scale_trace.py l2l-art 0.03 '{"name": "art", "style": "family", "size": 128}' 128 9

prints, per problem (those ``evaluate`` draws for the validation split), the loss and the scale of the first parameter
group at 16 points of the run, with a bolted-on controller at the given rate (:mod:`learned_optim.control`).
"""

from __future__ import annotations

import json
import math
import sys

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import EVALUATION_SEED, run_optimizer
from learned_optim.meta.tasks import seeded
from learned_optim.meta.tasks.registry import make_task
from learned_optim.optimizer import CONTROL_KEY

if __name__ == "__main__":
    checkpoint, rate, spec, steps, problems = sys.argv[1:6]
    network = pretrained.load(checkpoint).with_scale_rate(float(rate))
    task, steps = make_task(json.loads(spec), "validation"), int(steps)
    every = max(1, steps // 16)
    for i in range(int(problems)):
        scales: list[float] = []

        def make(params):
            optimizer = LearnedOptimizer(params, network, total_steps=steps)
            optimizer.register_step_post_hook(lambda o, *_: scales.append(math.exp(o.param_groups[0][CONTROL_KEY][0])))
            return optimizer

        losses = run_optimizer(task.sample(seeded(EVALUATION_SEED + i)), make, steps).losses
        print(f"problem {i}: loss " + " ".join(f"{loss:.3g}" for loss in losses[::every]) + f" | last {losses[-1]:.4g}")
        print(f"problem {i}: scale " + " ".join(f"{s:.2f}" for s in scales[::every]) + f" | max {max(scales):.2f}",
              flush=True)
