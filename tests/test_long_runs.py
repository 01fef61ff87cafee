"""Long runs are safe: 10,000 steps of an MNIST MLP stay finite; the default ends below its start, l2o-generalist keeps
improving; 5,000 steps of a byte-level Transformer (examples/language_model.py) stay finite, learn and keep their
memory flat."""

import math

import pytest
import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import run_optimizer
from learned_optim.meta.tasks.registry import make_task
from learned_optim.meta.tasks import seeded

from conftest import mnist_root

STEPS = 10_000


def windows(losses: list[float], size: int = 500) -> list[float]:
    """Mean loss over consecutive windows of ``size`` steps (minibatch losses are noisy)."""
    return [sum(losses[start:start + size]) / size for start in range(0, len(losses), size)]


@pytest.mark.slow
def test_the_default_runs_10000_steps_finite_and_ends_below_its_start():
    task = make_task({"name": "mnist", "hidden_sizes": [20], "root": mnist_root()}, "test")
    network = pretrained.load()
    run = run_optimizer(task.sample(seeded(7)), lambda params: LearnedOptimizer(params, network), STEPS)
    assert all(math.isfinite(loss) for loss in run.losses)
    means = windows(run.losses)
    assert means[-1] < 0.5 * run.losses[0]
    assert all(torch.isfinite(p).all() for p in run.params.values())


@pytest.mark.slow
def test_l2o_generalist_keeps_improving_for_10000_steps():
    """100 times its 100-step training horizon, the loss of the RNNprop-input network keeps falling."""
    task = make_task({"name": "mnist", "hidden_sizes": [20], "root": mnist_root()}, "test")
    network = pretrained.load("l2o-generalist")
    run = run_optimizer(task.sample(seeded(7)), lambda params: LearnedOptimizer(params, network), STEPS)
    assert all(math.isfinite(loss) for loss in run.losses)
    means = windows(run.losses)
    assert means[-1] < 0.5 * means[2]  # the last 500 steps against steps 1,000-1,500


@pytest.mark.slow
def test_a_language_model_trains_5000_steps_finite_and_learning_with_flat_memory():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from language_model import train

    run = train(lambda params, steps: LearnedOptimizer(params, total_steps=steps), 5000, 1000, "LearnedOptimizer")
    assert all(math.isfinite(loss) for loss in run["losses"])
    means = windows(run["losses"])
    assert means[-1] < 0.75 * means[0] and run["validation"][5000] < run["validation"][1000]
    assert run["memory_mb"][5000] < run["memory_mb"][1000] + 50  # no state or graph kept across steps
