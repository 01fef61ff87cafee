"""torch.optim's generic contract, as PyTorch's own optimizer tests check it: state dicts loaded any number of times
and into copies, the four state-dict hooks, tensor ``lr``, and zero gradients, on every execution path."""

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from learned_optim import LearnedOptimizer, list_pretrained, pretrained

from conftest import model_and_optimizer, parameters, random_network, train


@pytest.mark.parametrize("copier", ["load twice", "deepcopy", "pickle"])
def test_a_state_dict_loads_again_and_into_copies_and_they_continue_alike(copier):
    network = random_network(preprocessing="adam", output="tanh", nominal=0.01)
    model, optimizer = model_and_optimizer(network)
    train(model, optimizer, 3)
    saved = copy.deepcopy(optimizer.state_dict())
    twin_model = copy.deepcopy(model)
    twin = LearnedOptimizer([{"params": twin_model[0].parameters()}, {"params": twin_model[2].parameters()}], network)
    if copier == "load twice":
        twin.load_state_dict(saved)
        twin.load_state_dict(saved)
    else:
        clone = copy.deepcopy(optimizer) if copier == "deepcopy" else pickle.loads(pickle.dumps(optimizer))
        clone.load_state_dict(saved)  # a copy takes a state dict too
        twin.load_state_dict(clone.state_dict())
    optimizer.load_state_dict(saved)  # and the original takes its own again
    train(model, optimizer, 3, seed=1)
    train(twin_model, twin, 3, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(parameters(model), parameters(twin_model)))


def test_state_dict_hooks_run_as_on_adam(network):
    model, optimizer = model_and_optimizer(network)
    train(model, optimizer, 2)
    calls = []
    optimizer.register_state_dict_pre_hook(lambda opt: calls.append(("save pre", opt)))
    optimizer.register_state_dict_post_hook(lambda opt, sd: {**sd, "extra": 1})
    saved = optimizer.state_dict()
    assert calls == [("save pre", optimizer)] and saved["extra"] == 1 and "group_networks" in saved

    def halve_lr(opt, sd):
        sd = copy.deepcopy(sd)
        sd["param_groups"][0]["lr"] = 0.25
        return sd

    optimizer.register_load_state_dict_pre_hook(halve_lr)
    optimizer.register_load_state_dict_post_hook(lambda opt: calls.append(("load post", len(opt.state))))
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["lr"] == 0.25  # the pre-hook's state dict was the one loaded
    assert calls[-1] == ("load post", 4)  # after the LSTM states were restored


def test_tensor_lr_equals_float_lr_on_every_path(path, network):
    runs = []
    for lr in (0.5, torch.tensor(0.5)):
        model, optimizer = model_and_optimizer(network, lr=lr)
        train(model, optimizer, 3)
        assert set(optimizer.last_step_paths) == {path}
        runs.append(parameters(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_tensor_lr_works_with_float64_parameters_and_a_scheduler(network):
    p = nn.Parameter(torch.randn(5, dtype=torch.float64))
    optimizer = LearnedOptimizer([p], network, lr=torch.tensor(1.0))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.randn(5, dtype=torch.float64)
        optimizer.step()
        scheduler.step()
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    assert optimizer.param_groups[0]["lr"].item() == 0.125 and p.isfinite().all()


def test_a_tensor_lr_of_several_elements_is_refused_naming_the_fix(network):
    with pytest.raises(ValueError, match="lr must be a number or a 1-element tensor"):
        LearnedOptimizer([nn.Parameter(torch.ones(2))], network, lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("name", sorted(list_pretrained()))
def test_zero_gradients_move_nothing_with_every_checkpoint_on_every_path(path, name):
    """Frozen-by-zero-gradient weights, unused embedding rows and padding rows stay put; the other coordinates
    of the same tensor move."""
    network = pretrained.load(name)
    torch.manual_seed(0)
    embedding = nn.Embedding(10, 4, padding_idx=0)
    frozen = nn.Parameter(torch.randn(3, 3))
    optimizer = LearnedOptimizer([embedding.weight, frozen], network, lr=1.0)
    start = embedding.weight.detach().clone(), frozen.detach().clone()
    for _ in range(20):
        optimizer.zero_grad()
        embedding(torch.tensor([0, 1, 2, 2, 5])).pow(2).sum().backward()  # rows 0 (padding), 1, 2, 5 looked up
        frozen.grad = torch.zeros_like(frozen)
        optimizer.step()
    assert set(optimizer.last_step_paths) == {path}
    unused = [0, 3, 4, 6, 7, 8, 9]
    assert torch.equal(embedding.weight[unused], start[0][unused])
    assert torch.equal(frozen, start[1])
    assert not torch.equal(embedding.weight[[1, 2, 5]], start[0][[1, 2, 5]])


def test_meta_training_steps_keep_zero_gradients_still():
    """The differentiable steps meta-training unrolls obey the same rule, so a network learns under it."""
    from learned_optim.functional import chunked_update, reference_update

    network = random_network(preprocessing="adam", output="tanh", nominal=0.01)
    weights, grad = network.fused_weights(), torch.tensor([0.0, 1e-3, 0.0, -2.0])
    state = (*network.initial_state(4).unbind(0), network.initial_moments(4))
    for update in (reference_update, chunked_update):
        step, _ = update(weights, grad, state)
        assert step[0] == 0 and step[2] == 0 and (step[[1, 3]] != 0).all()


def test_one_cycle_lr_runs_with_cycle_momentum_off_as_documented(network):
    """The rule has no momentum option for OneCycleLR to cycle: ``cycle_momentum=False`` is the documented fix."""
    p = nn.Parameter(torch.randn(4))
    optimizer = LearnedOptimizer([p], network)
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10, cycle_momentum=False)
    lrs = []
    for _ in range(9):
        p.grad = torch.randn(4)
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] < max(lrs) > lrs[-1] and p.isfinite().all()  # up, then down


def test_a_loaded_tensor_lr_is_the_optimizers_own(network):
    """As torch.optim does, loading copies the saved options: a scheduler stepping one optimizer's tensor lr
    in place does not change the optimizer whose state dict it came from."""
    first = LearnedOptimizer([nn.Parameter(torch.ones(2))], network, lr=torch.tensor(0.5))
    second = LearnedOptimizer([nn.Parameter(torch.ones(2))], network, lr=torch.tensor(0.5))
    second.load_state_dict(first.state_dict())
    second.param_groups[0]["lr"].fill_(0.1)
    assert first.param_groups[0]["lr"].item() == 0.5


SCHEDULERS = {  # every scheduler in torch.optim.lr_scheduler, as a user would configure it
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda t: 0.9 ** t),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda t: 0.9),
    "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.5),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=3),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=4),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=6, power=2.0),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=6),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(o, base_lr=0.1, max_lr=1.0, step_size_up=2, cycle_momentum=False),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=10, cycle_momentum=False),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.2, total_iters=2),
                                                            lr_scheduler.ExponentialLR(o, 0.8)], milestones=[2]),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(o, 0.5, total_iters=3),
                                                                 lr_scheduler.ExponentialLR(o, 0.9)]),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
}


def test_every_scheduler_of_torch_is_covered():
    import inspect

    schedulers = {name for name, value in vars(lr_scheduler).items() if inspect.isclass(value) and issubclass(
        value, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)) and value is not lr_scheduler.LRScheduler
        and not name.startswith("_")}
    assert schedulers == set(SCHEDULERS)


@pytest.mark.filterwarnings("ignore:Detected call of")  # the reference SGD only schedules, it never steps
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_sets_the_rate_as_on_sgd_and_each_step_is_its_rate_times_the_rule(path, network, name):
    """The learning rates follow the same sequence as on torch.optim.SGD, and every step moves the parameters by the
    current rate times the rule's update (a twin at rate 1 from the same parameters and state), on every execution
    path; the scheduler's state dict resumes it."""
    model, optimizer = model_and_optimizer(network)
    twin_model, twin = model_and_optimizer(network)
    sgd = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]}, {"params": [nn.Parameter(torch.zeros(1))]}],
                          lr=optimizer.param_groups[0]["lr"])
    sgd.param_groups[1]["lr"] = optimizer.param_groups[1]["lr"]
    schedule, reference = SCHEDULERS[name](optimizer), SCHEDULERS[name](sgd)
    plateau = name == "ReduceLROnPlateau"
    for step in range(8):
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs == [group["lr"] for group in sgd.param_groups], step
        twin_model.load_state_dict(model.state_dict())
        twin.load_state_dict(optimizer.state_dict())
        for group in twin.param_groups:
            group["lr"] = 1.0
        before = parameters(model)
        train(model, optimizer, 1, seed=step)
        train(twin_model, twin, 1, seed=step)
        assert set(optimizer.last_step_paths) == {path}
        for a, b, start, lr in zip(parameters(model), parameters(twin_model), before, [lrs[0]] * 2 + [lrs[1]] * 2):
            torch.testing.assert_close(a - start, lr * (b - start), rtol=1e-4, atol=1e-7)
        schedule.step(*([1.0] if plateau else []))  # a loss that never improves: the plateau halves the rate
        reference.step(*([1.0] if plateau else []))
    resumed = SCHEDULERS[name](optimizer)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.state_dict() == schedule.state_dict() or plateau
