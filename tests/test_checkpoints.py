"""Golden numbers of the bundled checkpoints: pinned losses on seeded problems, and their claims."""

import pytest
import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.evaluation import run_optimizer
from learned_optim.meta.tasks import QuadraticTask, seeded

from conftest import real_mnist

PINNED = {
    # checkpoint: (loss at step 100, sum over 100 steps) on QuadraticTask() seeds 0, 1, 2
    "l2l-quadratic": ([0.077883, 0.169126, 4e-05], [167.4159, 327.8803, 202.6338]),
    "l2l-mnist": ([1.536618, 2.121405, 0.32599], [1737.5809, 2682.0865, 2053.2991]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_losses_on_seeded_quadratics(name):
    network = pretrained.load(name)
    runs = [run_optimizer(QuadraticTask().sample(seeded(seed)), lambda p: LearnedOptimizer(p, network), 100).losses
            for seed in range(3)]
    last, total = PINNED[name]
    torch.testing.assert_close(torch.tensor([r[-1] for r in runs]), torch.tensor(last), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(torch.tensor([sum(r) for r in runs]), torch.tensor(total), rtol=1e-4, atol=0)


@pytest.mark.slow
@pytest.mark.skipif(real_mnist() is None, reason="real MNIST not found: set LEARNED_OPTIM_MNIST")
def test_l2l_mnist_model_card_claims_on_the_20_unit_panel():
    """The card's claims: the lowest sum of losses of all tuned optimizers, final loss about 0.38."""
    from learned_optim.meta.evaluation import compare
    from learned_optim.meta.registry import DEFAULTS, make_task

    summaries = compare(pretrained.load("l2l-mnist"), make_task(DEFAULTS["mnist"]["task"]), steps=100,
                        num_problems=10, num_tuning_problems=5)
    metrics = {s.name: s.metrics for s in summaries}
    assert metrics["LSTM"]["sum"] < min(m["sum"] for name, m in metrics.items() if name != "LSTM")
    assert metrics["LSTM"]["final"] < 0.40
