"""Run-time step-scale control (learned_optim.control): the controller's rule, the optimizer's groups on every
execution path, their state through state dicts, and meta-training's rollouts agreeing with the optimizer."""

import copy
import math
import pickle

import pytest
import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer
from learned_optim.control import INITIAL_STATE, SCALE_BOUNDS, BatchControl, alignment_terms, control_step
from learned_optim.meta.pes import Particles
from learned_optim.meta.tasks import stack_problems
from learned_optim.meta.truncated import Unroller
from learned_optim.optimizer import CONTROL_KEY, PREVIOUS_KEY

from conftest import model_and_optimizer, parameters, random_network, train


def controlled(rate=0.05, **config):
    return random_network(preprocessing="adam", output="tanh", scale_rate=rate, **config)


def test_the_scale_grows_while_steps_stay_downhill_shrinks_after_overshoots_and_stays_in_bounds():
    start = torch.tensor([INITIAL_STATE] * 3, dtype=torch.float64)
    terms = torch.tensor([[-1.0, 4.0, 1.0], [1.0, 4.0, 1.0], [0.0, 4.0, 0.0]], dtype=torch.float64)  # cos -1/2, 1/2
    state = start
    for step in range(1, 6):
        state = control_step(state, terms, 0.1)
        assert state[0, 0].item() == pytest.approx(0.1 * step)  # a steady alignment: the full rate per step
        assert state[1, 0].item() == pytest.approx(-0.1 * step)
    assert torch.equal(state[2], start[2])  # no previous update: unchanged
    for _ in range(200):
        state = control_step(state, terms, 0.1)
    assert math.exp(state[0, 0]) == pytest.approx(SCALE_BOUNDS[1]) and math.exp(state[1, 0]) == pytest.approx(
        SCALE_BOUNDS[0])


def test_alignment_terms_of_a_group_sum_its_tensors_and_meta_trainings_controllers_agree():
    grads, previous = [torch.randn(7), torch.randn(3)], [torch.randn(7), torch.randn(3)]
    g, u = torch.cat(grads), torch.cat(previous)
    expected = torch.stack([g @ u, g @ g, u @ u]).double()
    assert torch.allclose(alignment_terms(grads, previous), expected)
    control = BatchControl(0.1, 1, 10, u)  # meta-training's controllers step on the same terms
    control.previous = u[None].clone()
    control.scaled(torch.ones(1, 10), g[None])
    start = torch.tensor([INITIAL_STATE], dtype=torch.float64)
    assert torch.allclose(control.state, control_step(start, expected[None], 0.1))


def test_control_changes_the_trajectory_and_a_zero_rate_is_the_uncontrolled_network_exactly(path):
    base = random_network(preprocessing="adam", output="tanh")
    runs = {}
    for rate in (0.0, 0.05):
        network = base.with_scale_rate(rate)
        model, optimizer = model_and_optimizer(network)
        train(model, optimizer, 6)
        assert optimizer.last_step_paths == {path: 4}
        runs[rate] = parameters(model), optimizer
    model, optimizer = model_and_optimizer(base)
    train(model, optimizer, 6)
    assert all(torch.equal(a, b) for a, b in zip(parameters(model), runs[0.0][0]))
    assert not any(torch.equal(a, b) for a, b in zip(parameters(model), runs[0.05][0]))
    groups = runs[0.05][1].param_groups
    assert all(group[CONTROL_KEY][3] == 5 for group in groups)  # stepped from the second step on
    assert all(CONTROL_KEY not in group for group in runs[0.0][1].param_groups)


def test_every_execution_path_steps_the_controller_alike(path):
    model, optimizer = model_and_optimizer(controlled())
    train(model, optimizer, 6)
    reference_model, reference = model_and_optimizer(controlled(), chunk_size=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEARNED_OPTIM_KERNEL", "0")
        patch.setenv("LEARNED_OPTIM_TRITON", "0")
        train(reference_model, reference, 6)
    assert reference.last_step_paths == {"pytorch": 4}
    for got, expected in zip(parameters(model), parameters(reference_model)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for group, expected in zip(optimizer.param_groups, reference.param_groups):
        assert group[CONTROL_KEY] == pytest.approx(expected[CONTROL_KEY], rel=1e-4, abs=1e-6)


def test_the_update_is_the_network_step_times_lr_and_the_group_scale():
    model, optimizer = model_and_optimizer(controlled(0.2), weight_decay=0.1)
    train(model, optimizer, 4)
    before = {p: p.detach().clone() for p in model.parameters()}
    train(model, optimizer, 1, seed=3)
    for group in optimizer.param_groups:
        scale = math.exp(group[CONTROL_KEY][0])
        assert scale != 1.0
        for p in group["params"]:
            old = before[p]
            expected = (1 - group["lr"] * 0.1) * old + group["lr"] * scale * optimizer.state[p][PREVIOUS_KEY].view_as(p)
            torch.testing.assert_close(p.detach(), expected)


def test_maximize_steps_the_controller_as_minimizing_the_negated_objective():
    results = []
    for maximize in (False, True):
        torch.manual_seed(0)
        model = nn.Linear(6, 2)
        optimizer = LearnedOptimizer(model.parameters(), controlled(), maximize=maximize)
        generator = torch.Generator().manual_seed(0)
        for _ in range(5):
            optimizer.zero_grad()
            loss = model(torch.randn(16, 6, generator=generator)).pow(2).mean()
            (-loss if maximize else loss).backward()
            optimizer.step()
        results.append((parameters(model), optimizer.param_groups[0][CONTROL_KEY]))
    assert all(torch.equal(a, b) for a, b in zip(results[0][0], results[1][0]))
    assert results[0][1] == results[1][1]


@pytest.mark.parametrize("copier", ["state dict", "deepcopy", "pickle"])
def test_a_controlled_run_resumes_bitwise(copier):
    model, optimizer = model_and_optimizer(controlled())
    train(model, optimizer, 4)
    if copier == "state dict":
        twin_model = copy.deepcopy(model)
        twin = LearnedOptimizer([{"params": twin_model[0].parameters()}, {"params": twin_model[2].parameters()}],
                                controlled())
        twin.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    elif copier == "deepcopy":
        twin_model, twin = copy.deepcopy((model, optimizer))
    else:
        twin_model, twin = pickle.loads(pickle.dumps((model, optimizer)))
    train(model, optimizer, 4, seed=1)
    train(twin_model, twin, 4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(parameters(model), parameters(twin_model)))
    assert [g[CONTROL_KEY] for g in optimizer.param_groups] == [g[CONTROL_KEY] for g in twin.param_groups]


def test_state_from_an_uncontrolled_network_loads_only_with_allow_other_network_and_restarts_the_controller():
    plain = random_network(preprocessing="adam", output="tanh")
    model, optimizer = model_and_optimizer(plain)
    train(model, optimizer, 2)
    other_model, other = model_and_optimizer(controlled())
    with pytest.raises(ValueError, match="allow_other_network"):
        other.load_state_dict(optimizer.state_dict())
    other.load_state_dict(optimizer.state_dict(), allow_other_network=True)
    assert all(group[CONTROL_KEY] == list(INITIAL_STATE) for group in other.param_groups)
    train(other_model, other, 2)  # the previous updates start at zero
    assert all(PREVIOUS_KEY in other.state[p] for p in other_model.parameters())
    _, back = model_and_optimizer(plain)
    back.load_state_dict(other.state_dict(), allow_other_network=True)  # and the other way: the control state goes
    assert all(CONTROL_KEY not in group for group in back.param_groups)
    assert all(PREVIOUS_KEY not in back.state[p] for p in back.state)


def test_a_previous_update_of_the_wrong_shape_is_refused():
    model, optimizer = model_and_optimizer(controlled())
    train(model, optimizer, 2)
    state = optimizer.state_dict()
    state["state"][0][PREVIOUS_KEY] = torch.zeros(3)
    with pytest.raises(ValueError, match="previous update"):
        optimizer.load_state_dict(state)


def test_the_scale_rate_is_checked_and_saved_with_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="scale_rate"):
        CoordinatewiseLSTM(scale_rate=-0.1)
    network = controlled(0.02)
    network.save_pretrained(tmp_path)
    loaded = CoordinatewiseLSTM.from_pretrained(tmp_path)
    assert loaded.scale_rate == 0.02 and loaded.fingerprint() == network.fingerprint()
    assert "scale_rate" not in random_network().config  # older checkpoints keep their config and fingerprint


class Quadratic:
    """Problems ``f(theta) = |A theta - b|^2 / 2`` with the interface meta-training's rollouts take."""

    def __init__(self, seed):
        generator = torch.Generator().manual_seed(seed)
        self.a, self.b = torch.randn(5, 5, generator=generator), torch.randn(5, generator=generator)
        self.theta = torch.randn(5, generator=generator)

    def loss(self, theta):
        return (self.a @ theta - self.b).pow(2).sum() / 2


def test_meta_trainings_rollouts_step_as_the_optimizer_does(quadratic_problems):
    network = controlled(0.1)
    problems, truth = quadratic_problems
    unroller_losses = Unroller(network, problems).rollout(8)
    particles = Particles(network, problems)
    weights = [network.fused_weights()] * len(truth)
    particle_losses = [particles.initial_loss] + [particles.advance(weights) for _ in range(7)]
    torch.testing.assert_close(unroller_losses, torch.stack(particle_losses), rtol=1e-5, atol=1e-6)
    for k, problem in enumerate(truth):
        theta = problem.theta.clone().requires_grad_()
        optimizer = LearnedOptimizer([theta], network)
        losses = []
        for _ in range(8):
            optimizer.zero_grad()
            loss = problem.loss(theta)
            losses.append(loss.detach())
            loss.backward()
            optimizer.step()
        torch.testing.assert_close(unroller_losses[:, k], torch.stack(losses), rtol=1e-5, atol=1e-6)


@pytest.fixture
def quadratic_problems():
    from learned_optim.meta.tasks import Problem

    truth = [Quadratic(seed) for seed in range(3)]
    problems = [Problem({"theta": q.theta.clone()}, lambda params, step, q=q: q.loss(params["theta"])) for q in truth]
    return stack_problems(problems), truth
