"""Persistent evolution strategies: the estimate points along the exact meta-gradient, a run resumes bitwise and
splits over processes like truncated BPTT, and its options are checked."""

import pytest
import torch

from learned_optim.meta.cli import main
from learned_optim.meta.pes import pes_episode
from learned_optim.meta.tasks import QuadraticTask, seeded, stack_problems
from learned_optim.meta.train import Run
from learned_optim.meta.truncated import Recipe, Unroller

from conftest import random_network, torchrun

PES = ["--task", "quadratic", "--num-functions", "2", "--episodes", "4", "--horizon", "12", "--unroll", "4",
       "--validate-every", "2", "--num-validation", "2", "--meta-batch", "4", "--estimator", "pes",
       "--pes-sigma", "0.05", "--random-scale", "1", "--random-scale-per", "tensor", "--objective", "log"]


def test_pes_estimate_points_along_the_exact_meta_gradient():
    """On one unroll PES is antithetic ES: over many pairs its estimate aligns with the gradient of the unroll's
    objective through the whole dynamics (second derivatives kept)."""
    network = random_network(hidden_size=2, num_layers=1, preprocessing="none", output_scale=0.1)
    problem = QuadraticTask(dim=3, num_functions=1).sample(seeded(0))
    unroller = Unroller(network, problem, second_order=True, objective="sum", horizon=5)
    meta_loss, _ = unroller.unroll(5)
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(meta_loss.sum(), list(network.parameters()))])
    pairs = 256
    before = torch.nn.utils.parameters_to_vector(network.parameters()).detach().clone()
    pes_episode(network, torch.optim.SGD(network.parameters(), lr=1.0), stack_problems([problem] * pairs),
                Recipe(horizon=5, unroll=5, objective="sum", estimator="pes", pes_sigma=1e-2),
                generators=[seeded(k) for k in range(pairs)])
    estimate = before - torch.nn.utils.parameters_to_vector(network.parameters()).detach()
    assert torch.nn.functional.cosine_similarity(estimate, exact, dim=0) > 0.9
    assert 0.5 < estimate.norm() / exact.norm() < 2


def test_a_pes_run_resumes_bitwise_and_logs_its_estimator(tmp_path):
    main(["train", str(tmp_path / "whole"), *PES])
    main(["train", str(tmp_path / "part"), *PES, "--episodes", "2"])
    main(["train", str(tmp_path / "part"), "--resume", "--episodes", "4"])
    whole, part = Run(tmp_path / "whole").checkpoint()["network"], Run(tmp_path / "part").checkpoint()["network"]
    assert all(torch.equal(whole[name], part[name]) for name in whole)
    log = Run(tmp_path / "whole").log()
    assert {e["estimator"] for e in log if "estimator" in e} == {"pes"}
    assert all(e["skipped"] == 0 and e["meta_loss"] == e["meta_loss"] for e in log if "estimator" in e)
    assert '"estimator": "pes"' in (tmp_path / "whole" / "run.json").read_text()


def test_pes_on_two_torchrun_processes_gives_the_single_process_weights(tmp_path):
    """Each process runs its share of the meta-batch, noise drawn from each problem's own generator, and the
    meta-gradients are summed: the weights of one process, to float tolerance."""
    main(["train", str(tmp_path / "one"), *PES])
    torchrun(["train", str(tmp_path / "two"), *PES])
    one, two = Run(tmp_path / "one").checkpoint()["network"], Run(tmp_path / "two").checkpoint()["network"]
    for name, weight in one.items():
        torch.testing.assert_close(two[name], weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"estimator": "es"}, "Invalid estimator: 'es'"),
    ({"estimator": "pes", "pes_sigma": 0.0}, "Invalid pes_sigma: 0.0"),
    ({"objective": "log_final", "unroll": 20}, "or use the pes estimator"),
])
def test_bad_estimator_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**options)


def test_pes_takes_the_final_loss_objective_with_truncations():
    """PES carries every perturbation to the episode's end, so the last steps' losses reach the early updates."""
    assert Recipe(objective="log_final", unroll=20, estimator="pes").unroll == 20


def test_pes_carries_the_perturbations_across_unrolls():
    """The second unroll's estimate (weights unchanged in between) aligns with the gradient of that unroll's
    objective with respect to the weights of every step since the episode began, not just its own: what
    accumulating the perturbations buys over truncated ES."""
    network = random_network(hidden_size=2, num_layers=1, preprocessing="none", output_scale=0.1)
    problem = QuadraticTask(dim=3, num_functions=1).sample(seeded(0))
    unroller = Unroller(network, problem, second_order=True, objective="sum", horizon=10)
    unroller.unroll(5)
    second, _ = unroller.unroll(5)  # the graph of the whole trajectory kept
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(second.sum(), list(network.parameters()))])
    pairs, estimates = 1024, []
    meta_optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    meta_optimizer.register_step_post_hook(lambda optimizer, args, kwargs: estimates.append(
        torch.cat([p.grad.reshape(-1) for p in network.parameters()])))
    pes_episode(network, meta_optimizer, stack_problems([problem] * pairs),
                Recipe(horizon=10, unroll=5, objective="sum", estimator="pes", pes_sigma=1e-2),
                generators=[seeded(k) for k in range(pairs)])
    assert len(estimates) == 2
    assert torch.nn.functional.cosine_similarity(estimates[1], exact, dim=0) > 0.95  # 0.91 without carrying them
