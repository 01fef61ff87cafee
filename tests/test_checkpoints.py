"""Golden numbers of the bundled checkpoints: pinned losses on seeded problems (their claims: test_claims.py)."""

import pytest
import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import run_optimizer
from learned_optim.meta.tasks import QuadraticTask, seeded


PINNED = {
    # checkpoint: (loss at step 100, sum over 100 steps) on QuadraticTask() seeds 0, 1, 2
    "l2l-quadratic": ([0.083618, 0.116393, 1e-06], [166.8743, 312.0992, 195.1391]),
    "l2l-mnist": ([2.803525, 43.642212, 14.201296], [2323.9936, 3871.139, 3619.0114]),
    "l2l-art": ([0.798669, 4.544998, 0.299557], [753.549, 1219.6278, 1199.0826]),
    "l2o-generalist": ([2.789567, 7.490271, 3.763802], [2392.5878, 3036.5697, 3903.6424]),
    "l2o-generalist-2": ([1.672855, 5.613966, 0.719845], [2203.8714, 2828.6416, 3548.6843]),
    "l2o-generalist-3": ([1.46742, 5.44219, 0.475504], [1994.0633, 2588.6456, 3203.5434]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_losses_on_seeded_quadratics(name):
    network = pretrained.load(name)
    runs = [run_optimizer(QuadraticTask().sample(seeded(seed)), lambda p: LearnedOptimizer(p, network), 100).losses
            for seed in range(3)]
    last, total = PINNED[name]
    torch.testing.assert_close(torch.tensor([r[-1] for r in runs]), torch.tensor(last), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(torch.tensor([sum(r) for r in runs]), torch.tensor(total), rtol=1e-4, atol=0)
