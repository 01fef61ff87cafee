"""Progress awareness: a network told how far training has come (``progress`` in its config, the optimizer's
``total_steps``), on every execution path, through state dicts, and in meta-training's sampled horizons."""

import copy

import pytest
import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer
from learned_optim.functional import progress_features
from learned_optim.meta.pes import Particles
from learned_optim.meta.tasks import Problem, stack_problems
from learned_optim.meta.train import RunConfig, episode_horizon
from learned_optim.meta.truncated import Recipe, Unroller
from learned_optim.optimizer import STEPS_KEY
from learned_optim.preprocessing import log_sign

from conftest import model_and_optimizer, parameters, random_network, train


def test_progress_inputs_are_the_first_layers_last_inputs_as_nn_lstmcell_takes_them():
    network = random_network(progress=True)
    grad, state = torch.randn(50), [torch.randn(50, network.hidden_size) for _ in range(4)]
    update, new_state = network(grad, state, step=3, total_steps=12)
    x = torch.cat([log_sign(grad, network.p), torch.tensor([[1.0, 0.25]]).expand(50, 2)], dim=1)
    for layer, cell in enumerate(network.cells):
        h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
        torch.testing.assert_close((new_state[2 * layer], new_state[2 * layer + 1]), (h, c))
        x = h
    torch.testing.assert_close(update, network.head(x).squeeze(1) * network.output_scale)


def test_the_features_say_the_fraction_done_or_that_it_is_not_known():
    assert progress_features(0, 10) == (1.0, 0.0) and progress_features(5, 10) == (1.0, 0.5)
    assert progress_features(15, 10) == (1.0, 1.0)  # training that runs past its announced end
    assert progress_features(7, None) == (0.0, 0.0)


def test_with_progress_starts_as_the_same_rule_and_checkpoints_round_trip(tmp_path):
    network = random_network(preprocessing="adam", output="tanh")
    extended = network.with_progress()
    grad = torch.randn(40)
    for step, total in ((0, None), (7, 10), (30, 10)):
        state = (*(network.initial_state(40) + 0.1), network.initial_moments(40) + 0.1)
        expected, _ = network(grad, state)
        got, _ = extended(grad, state, step=step, total_steps=total)
        torch.testing.assert_close(got, expected)
    trained = random_network(progress=True)
    trained.save_pretrained(tmp_path)
    assert CoordinatewiseLSTM.from_pretrained(tmp_path).fingerprint() == trained.fingerprint()


def test_the_optimizer_tells_the_network_its_progress_on_every_path(path):
    trajectories = {}
    for total in (None, 6, 600):
        model, optimizer = model_and_optimizer(random_network(preprocessing="adam", output="tanh", progress=True),
                                               total_steps=total)
        train(model, optimizer, 6)
        assert optimizer.last_step_paths == {path: 4}
        assert [group[STEPS_KEY] for group in optimizer.param_groups] == [6, 6]
        trajectories[total] = parameters(model)
    different = [not torch.equal(a, b) for a, b in zip(trajectories[6], trajectories[600])]
    assert all(different) and not any(torch.equal(a, b) for a, b in zip(trajectories[None], trajectories[6]))


def test_meta_trainings_rollouts_see_the_progress_the_optimizer_gives():
    network = random_network(preprocessing="adam", output="tanh", progress=True)
    torch.manual_seed(0)
    a, b, theta0 = torch.randn(4, 4), torch.randn(4), torch.randn(4)

    def loss(theta):
        return (a @ theta - b).pow(2).sum() / 2

    problem = Problem({"theta": theta0.clone()}, lambda params, step: loss(params["theta"]))
    for total in (None, 9):
        rollout = Unroller(network, problem, total_steps=total).rollout(9)[:, 0]
        unrolled = torch.cat([Unroller(network, problem, total_steps=total).initial_loss,
                              Unroller(network, problem, total_steps=total).unroll(8)[1][:, 0]])
        theta = theta0.clone().requires_grad_()
        optimizer = LearnedOptimizer([theta], network, total_steps=total)
        losses = []
        for _ in range(9):
            optimizer.zero_grad()
            value = loss(theta)
            losses.append(value.detach())
            value.backward()
            optimizer.step()
        torch.testing.assert_close(rollout, torch.stack(losses), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(unrolled, torch.stack(losses), rtol=1e-5, atol=1e-6)
        particles = Particles(network, stack_problems([problem]), total_steps=total)
        stepped = [particles.initial_loss] + [particles.advance([network.fused_weights()]) for _ in range(8)]
        torch.testing.assert_close(torch.cat(stepped), torch.stack(losses), rtol=1e-5, atol=1e-6)


def test_the_step_count_resumes_with_the_state_dict_and_old_state_dicts_load():
    network = random_network(progress=True)
    model, optimizer = model_and_optimizer(network, total_steps=10)
    train(model, optimizer, 3)
    twin_model = copy.deepcopy(model)
    twin = LearnedOptimizer([{"params": twin_model[0].parameters()}, {"params": twin_model[2].parameters()}],
                            network)
    twin.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin.param_groups[0]["total_steps"] == 10 and twin.param_groups[0][STEPS_KEY] == 3
    train(model, optimizer, 3, seed=1)
    train(twin_model, twin, 3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(parameters(model), parameters(twin_model)))
    old = optimizer.state_dict()
    for group in old["param_groups"]:
        del group["total_steps"]
    twin.load_state_dict(old)
    assert twin.param_groups[0]["total_steps"] == 10  # an older state dict keeps the optimizer's own


@pytest.mark.parametrize("total_steps", [0, -5, 2.5, True])
def test_an_invalid_total_steps_is_refused_naming_it(total_steps):
    with pytest.raises(ValueError, match="total_steps"):
        LearnedOptimizer(nn.Linear(2, 1).parameters(), random_network(), total_steps=total_steps)


def test_episode_horizons_are_drawn_log_uniformly_and_told_in_the_given_fraction():
    config = RunConfig(task={"name": "simple"}, recipe=Recipe(horizon=2000, min_horizon=100, unknown_horizon=0.25))
    draws = [episode_horizon(config, episode, 2000) for episode in range(400)]
    horizons = torch.tensor([h for h, _ in draws], dtype=torch.float64)
    assert horizons.min() >= 100 and horizons.max() <= 2000
    assert abs(float(horizons.log().mean()) - (torch.tensor(100.0).log() + torch.tensor(2000.0).log()) / 2) < 0.15
    assert 0.18 < sum(not told for _, told in draws) / 400 < 0.32
    assert draws == [episode_horizon(config, episode, 2000) for episode in range(400)]  # the same on every process
    fixed = RunConfig(task={"name": "simple"}, recipe=Recipe(horizon=50))
    assert {episode_horizon(fixed, episode, 50) for episode in range(20)} == {(50, True)}
    with pytest.raises(ValueError, match="min_horizon"):
        Recipe(horizon=50, min_horizon=80)
