import copy
import io
import pickle

import pytest
import torch
from torch import nn

from learned_optim import CheckpointError, LearnedOptimizer, kernel
from learned_optim.functional import reference_update
from learned_optim.optimizer import STATE_KEY

from conftest import missing, random_network


def grads_for(params, seed):
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)


RNNPROP_INPUTS = {"preprocessing": "adam", "output": "tanh"}
TWO_TIMESCALES = {"preprocessing": "adam_two_timescales"}  # the PyTorch path: no kernel knows it
NOMINAL = {**RNNPROP_INPUTS, "nominal": 0.05}


@pytest.mark.parametrize("config", [{}, RNNPROP_INPUTS, TWO_TIMESCALES, NOMINAL])
def test_step_follows_the_differentiable_reference_rule(config):
    """The optimizer (fast path, per tensor) equals the meta-training rule (reference path, flat)."""
    network = random_network(**config)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    moments = network.initial_moments(theta.numel())
    state = (*network.initial_state(theta.numel()), *([] if moments is None else [moments]))
    optimizer = LearnedOptimizer(params, network)
    for step in range(4):
        grads_for(params, step)
        flat_grad = torch.cat([p.grad.reshape(-1) for p in params])
        with torch.no_grad():
            update, state = reference_update(network.fused_weights(), flat_grad, state)
        theta = theta + update
        optimizer.step()
        torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in params]), theta)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (2, 3, 4)])
def test_any_shape_and_non_contiguous_parameters(network, shape):
    contiguous = nn.Parameter(torch.randn(shape))
    before = contiguous.detach().clone()
    strided = nn.Parameter(torch.zeros(*shape, 2)[..., 0])  # every other element of a buffer
    assert strided.numel() == 1 or not strided.is_contiguous()
    with torch.no_grad():
        strided.copy_(contiguous)
    grad = torch.linspace(-1, 1, contiguous.numel()).reshape(shape)
    contiguous.grad, strided.grad = grad.clone(), grad.clone()
    opt_contiguous, opt_strided = LearnedOptimizer([contiguous], network), LearnedOptimizer([strided], network)
    opt_contiguous.step(), opt_strided.step()
    torch.testing.assert_close(strided.detach(), contiguous.detach())
    assert not torch.equal(contiguous.detach(), before)
    assert opt_strided.state[strided]["lstm_state"].shape == (4, contiguous.numel(), 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_parameter_dtypes_keep_their_dtype_and_state_stays_fp32(network, dtype):
    p = nn.Parameter(torch.randn(10, dtype=dtype))
    before = p.detach().clone()
    optimizer = LearnedOptimizer([p], network)
    p.grad = torch.randn(10, dtype=dtype)
    optimizer.step()
    assert p.dtype == dtype and not torch.equal(p.detach(), before)
    assert optimizer.state[p]["lstm_state"].dtype == torch.float32


def test_bfloat16_state_option(network):
    p = nn.Parameter(torch.randn(10))
    optimizer = LearnedOptimizer([p], network, state_dtype=torch.bfloat16)
    p.grad = torch.randn(10)
    optimizer.step()
    assert optimizer.state[p]["lstm_state"].dtype == torch.bfloat16


def test_parameter_without_gradient_is_left_bit_identical(network):
    a, b = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(4))
    optimizer = LearnedOptimizer([a, b], network)
    before = b.detach().clone()
    a.grad = torch.randn(4)
    optimizer.step()
    assert torch.equal(b.detach(), before) and b not in optimizer.state


def test_lr_scales_the_update_and_per_group_options(network):
    a, b, c = (nn.Parameter(torch.ones(6)) for _ in range(3))
    optimizer = LearnedOptimizer(
        [{"params": [a]}, {"params": [b], "lr": 0.5}, {"params": [c], "weight_decay": 0.1, "maximize": True}],
        network,
    )
    for p in (a, b, c):
        p.grad = torch.full((6,), 0.3)
    optimizer.step()
    update = a.detach() - 1
    torch.testing.assert_close(b.detach() - 1, 0.5 * update)
    maximized = LearnedOptimizer([nn.Parameter(torch.ones(6))], network)
    q = maximized.param_groups[0]["params"][0]
    q.grad = torch.full((6,), -0.3)
    maximized.step()
    torch.testing.assert_close(c.detach(), (1 - 0.1) * torch.ones(6) + (q.detach() - 1))


def test_add_param_group_and_invalid_options(network):
    optimizer = LearnedOptimizer([nn.Parameter(torch.ones(2))], network)
    optimizer.add_param_group({"params": [nn.Parameter(torch.ones(3))], "lr": 0.1})
    assert optimizer.param_groups[1]["lr"] == 0.1 and optimizer.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="Invalid learning rate"):
        LearnedOptimizer([nn.Parameter(torch.ones(2))], network, lr=-1)
    with pytest.raises(ValueError, match="Invalid weight_decay"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.ones(3))], "weight_decay": -1})
    with pytest.raises(ValueError, match="state_dtype"):
        LearnedOptimizer([nn.Parameter(torch.ones(2))], network, state_dtype=torch.int8)
    assert len(optimizer.param_groups) == 2


def test_closure_runs_with_grad_enabled_and_loss_is_returned(network):
    p = nn.Parameter(torch.tensor([1.5, -2.0]))
    optimizer = LearnedOptimizer([p], network)

    def closure():
        optimizer.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx(6.25) and not torch.equal(p.detach(), torch.tensor([1.5, -2.0]))


def make_model_and_optimizer(network, state_dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}]
    return model, LearnedOptimizer(groups, network, state_dtype=state_dtype)


def train_steps(model, optimizer, steps, offset=0):
    for step in range(offset, offset + steps):
        generator = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 5, generator=generator), torch.randn(16, 1, generator=generator)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("config", [{}, RNNPROP_INPUTS, TWO_TIMESCALES, NOMINAL])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_state_dict_resume_follows_the_uninterrupted_run_bitwise(config, state_dtype):
    network = random_network(**config)
    model, optimizer = make_model_and_optimizer(network, state_dtype)
    train_steps(model, optimizer, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    train_steps(model, optimizer, 3, offset=3)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed = make_model_and_optimizer(network, state_dtype)
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["optimizer"])
    assert all(s["lstm_state"].dtype == state_dtype for s in resumed.state.values())
    train_steps(resumed_model, resumed, 3, offset=3)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config, rows", [(RNNPROP_INPUTS, 3), (TWO_TIMESCALES, 5)])
def test_moments_are_per_parameter_state_and_checked_on_load(config, rows):
    network = random_network(**config)
    model, optimizer = make_model_and_optimizer(network)
    train_steps(model, optimizer, 2)
    assert all(s["moments"].shape == (rows, p.numel()) for p, s in optimizer.state.items())
    for damage in ("drop", "misshape"):
        state_dict = copy.deepcopy(optimizer.state_dict())
        if damage == "drop":
            del state_dict["state"][0]["moments"]
        else:
            state_dict["state"][0]["moments"] = torch.zeros(rows, 2)
        _, fresh = make_model_and_optimizer(network)
        with pytest.raises(ValueError, match="moments" if damage == "drop" else "shape"):
            fresh.load_state_dict(state_dict)
        assert not fresh.state


def test_hidden_state_dtype_survives_load_into_bf16_parameters(network):
    p = nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    optimizer = LearnedOptimizer([p], network)
    p.grad = torch.randn(4, dtype=torch.bfloat16)
    optimizer.step()
    state_dict = copy.deepcopy(optimizer.state_dict())
    fresh = LearnedOptimizer([p], network)
    fresh.load_state_dict(state_dict)
    assert fresh.state[p]["lstm_state"].dtype == torch.float32
    assert torch.equal(fresh.state[p]["lstm_state"], state_dict["state"][0]["lstm_state"])


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
def test_deepcopy_and_pickle_keep_network_and_state(network, clone):
    model, optimizer = make_model_and_optimizer(network)
    train_steps(model, optimizer, 2)
    model_copy = copy.deepcopy(model)
    cloned = clone(optimizer)
    assert isinstance(cloned.network, type(network))
    cloned_params = list(model_copy.parameters())
    # Re-point the cloned optimizer at the copied model's parameters, state included.
    mapping = dict(zip(map(id, (p for g in cloned.param_groups for p in g["params"])), cloned_params))
    for group in cloned.param_groups:
        group["params"] = [mapping[id(p)] for p in group["params"]]
    cloned.state = {mapping[id(p)]: s for p, s in cloned.state.items()}
    train_steps(model, optimizer, 2, offset=2)
    train_steps(model_copy, cloned, 2, offset=2)
    for a, b in zip(model.parameters(), model_copy.parameters()):
        assert torch.equal(a, b)


def test_network_is_frozen_copy_outside_param_groups(network):
    p = nn.Parameter(torch.ones(3))
    optimizer = LearnedOptimizer([p], network)
    assert optimizer.network is not network
    assert not any(w.requires_grad for w in optimizer.network.parameters())
    network_ids = {id(w) for w in optimizer.network.parameters()}
    assert not network_ids & {id(q) for g in optimizer.param_groups for q in g["params"]}


def snapshot(optimizer, params):
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict())


def assert_unchanged(optimizer, params, before):
    """Parameters, param groups and every state tensor as in ``before`` (a :func:`snapshot` taken earlier)."""
    values, state = before
    assert all(torch.equal(p, v) for p, v in zip(params, values))
    after = optimizer.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert after["state"].keys() == state["state"].keys()
    for key, entry in after["state"].items():
        assert entry.keys() == state["state"][key].keys()
        assert all(torch.equal(tensor, state["state"][key][name]) for name, tensor in entry.items())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_raises_naming_the_parameter_and_changes_nothing(network, bad):
    model = nn.Linear(3, 2)
    optimizer = LearnedOptimizer(model.named_parameters(), network)
    params = list(model.parameters())
    grads_for(params, 0)
    optimizer.step()
    before = snapshot(optimizer, params)
    grads_for(params, 1)
    model.bias.grad[1] = bad
    with pytest.raises(FloatingPointError, match="'bias'.*no parameter or optimizer state was changed"):
        optimizer.step()
    assert_unchanged(optimizer, params, before)


def test_finite_gradients_whose_sum_overflows_are_stepped(network):
    model = nn.Linear(3, 2)
    optimizer = LearnedOptimizer(model.parameters(), network)
    model.weight.grad = torch.full((2, 3), 3e38)  # finite, but their float32 sum is inf
    model.bias.grad = torch.zeros(2)
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(model.weight, before) and model.weight.isfinite().all()


def test_skip_nonfinite_skips_the_whole_step(network):
    model = nn.Linear(3, 2)
    params = list(model.parameters())
    optimizer = LearnedOptimizer(params, network, skip_nonfinite=True)
    grads_for(params, 0)
    optimizer.step()
    before = snapshot(optimizer, params)
    grads_for(params, 1)
    model.weight.grad[0, 0] = float("inf")
    optimizer.step()
    assert optimizer.skipped_steps == 1
    assert_unchanged(optimizer, params, before)


def test_sparse_gradients_and_complex_parameters_are_rejected(network):
    embedding = nn.Embedding(10, 3, sparse=True)
    optimizer = LearnedOptimizer(embedding.parameters(), network)
    embedding(torch.tensor([1, 2])).sum().backward()
    before = embedding.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        optimizer.step()
    assert torch.equal(embedding.weight.detach(), before)
    with pytest.raises(ValueError, match="complex|floating-point"):
        LearnedOptimizer([nn.Parameter(torch.randn(3, dtype=torch.complex64))], network)


def test_state_dict_from_another_optimizer_is_rejected_without_changes(network):
    model, optimizer = make_model_and_optimizer(network)
    train_steps(model, optimizer, 1)
    params = list(model.parameters())
    adam = torch.optim.Adam([{"params": model[0].parameters()}, {"params": model[2].parameters()}])
    train_steps(model, adam, 1)
    other = LearnedOptimizer(params[:2], network)
    grads_for(params[:2], 0)
    other.step()
    before = snapshot(optimizer, params)
    with pytest.raises(ValueError, match="not from a LearnedOptimizer"):
        optimizer.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="groups"):
        optimizer.load_state_dict(other.state_dict())
    wrong = copy.deepcopy(before[1])
    wrong["state"][0]["lstm_state"] = torch.zeros(4, 3, 20)
    with pytest.raises(ValueError, match="shape"):
        optimizer.load_state_dict(wrong)
    wrong_groups = copy.deepcopy(before[1])
    wrong_groups["param_groups"][1]["lr"] = 0.25
    wrong_groups["state"][len(wrong_groups["state"]) + 7] = wrong_groups["state"][0]
    with pytest.raises(ValueError, match="no param group holds"):
        optimizer.load_state_dict(wrong_groups)
    assert_unchanged(optimizer, params, before)


def test_unknown_checkpoint_name_is_a_clear_error():
    with pytest.raises(CheckpointError, match="unknown checkpoint 'no-such-checkpoint'"):
        LearnedOptimizer([nn.Parameter(torch.ones(1))], pretrained="no-such-checkpoint")


def test_end_to_end_training_loop_with_closure_groups_and_scheduler(network):
    from learned_optim.meta.train import Run  # noqa: F401  (meta is importable alongside)

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x @ torch.randn(8, 1)).tanh()
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = LearnedOptimizer(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}],
        pretrained="l2l-mnist",
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(100):
        loss = optimizer.step(closure)
        scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.125)
    assert loss.item() < 0.5 * first


def test_grad_scaler_unscales_and_skips_overflowing_steps(network):
    model = nn.Linear(4, 1)
    optimizer = LearnedOptimizer(model.parameters(), network)
    reference = copy.deepcopy(model)
    reference_optimizer = LearnedOptimizer(reference.parameters(), network)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(8, 4)
    for m, o, scale in ((model, optimizer, True), (reference, reference_optimizer, False)):
        o.zero_grad()
        loss = m(x).pow(2).mean()
        (scaler.scale(loss) if scale else loss).backward()
        scaler.step(o) if scale else o.step()
    scaler.update()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)

    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    scaler.scale(model(x).pow(2).mean() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    assert scaler.get_scale() < 1024.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_parameters_follow_the_cpu_trajectory(network):
    cpu = nn.Parameter(torch.randn(1000))
    gpu = nn.Parameter(cpu.detach().cuda())
    opt_cpu, opt_gpu = LearnedOptimizer([cpu], network), LearnedOptimizer([gpu], network)
    for step in range(3):
        grad = torch.randn(1000, generator=torch.Generator().manual_seed(step))
        cpu.grad, gpu.grad = grad, grad.cuda()
        opt_cpu.step(), opt_gpu.step()
    assert opt_gpu.state[gpu]["lstm_state"].device.type == "cuda"
    torch.testing.assert_close(gpu.detach().cpu(), cpu.detach(), rtol=1e-4, atol=1e-5)


def test_state_belongs_to_its_network(network):
    model, optimizer = make_model_and_optimizer(network)
    train_steps(model, optimizer, 2)
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["network"] == {"config": network.config, "fingerprint": network.fingerprint()[:16]}
    params = list(model.parameters())
    _, other = make_model_and_optimizer(random_network(seed=1))  # the same config, other weights
    other_params = [p.detach().clone() for p in other.param_groups[0]["params"]]
    with pytest.raises(ValueError, match="hidden states do not carry over between networks.*allow_other_network=True"):
        other.load_state_dict(saved)
    assert not other.state and all(torch.equal(a, b) for a, b in zip(other_params, other.param_groups[0]["params"]))
    other.load_state_dict(saved, allow_other_network=True)  # the user means it
    assert len(other.state) == len(params)
    # as saved before fingerprints
    legacy = {key: value for key, value in saved.items() if key not in ("network", "group_networks")}
    make_model_and_optimizer(random_network(seed=1))[1].load_state_dict(legacy)


@pytest.mark.parametrize("threshold, expected", [(2**20, 1), (0, "torch's")])
def test_small_steps_run_on_one_thread_and_restore_torchs_setting(network, threshold, expected, monkeypatch):
    """On the PyTorch path; the fused kernel splits the work over torch's threads itself."""
    from unittest import mock

    import learned_optim.optimizer as module

    monkeypatch.setenv(kernel.ENV_VAR, "0")
    seen = []

    real = module.fast_update_

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        param = torch.nn.Parameter(torch.randn(10))
        optimizer = LearnedOptimizer([param], network, parallel_threshold=threshold)
        param.grad = torch.randn(10)
        with mock.patch.object(module, "fast_update_", recording):
            optimizer.step()
        assert seen == [1 if expected == 1 else 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threshold, expected", [(2**20, 1), (0, 2)])
def test_a_small_steps_pytorch_operations_run_on_one_thread_and_the_kernel_on_up_to_torchs(network, threshold,
                                                                                           expected, monkeypatch):
    """Beside another busy process several threads stall on small operations; the kernel chooses its own count."""
    from unittest import mock

    if not kernel.available():
        missing("the fused CPU kernel")
    monkeypatch.setenv(kernel.ENV_VAR, "1")
    seen, real = [], kernel.fused_update_many_

    def recording(*args, **kwargs):
        seen.append((torch.get_num_threads(), kwargs["max_threads"]))
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        param = torch.nn.Parameter(torch.randn(10))
        optimizer = LearnedOptimizer([param], random_network(preprocessing="adam", scale_rate=0.1),
                                     parallel_threshold=threshold)
        param.grad = torch.randn(10)
        with mock.patch.object(kernel, "fused_update_many_", recording):
            optimizer.step()
        assert seen == [(expected, 2)] and optimizer.last_step_paths == {"cpu-kernel": 1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def per_group_model_and_optimizer(first, second):
    """Two layers, the second group with its own network."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "pretrained": second}]
    return model, LearnedOptimizer(groups, first)


def test_a_param_group_runs_its_own_network(network):
    other = random_network(seed=3, hidden_size=7, num_layers=1)
    model, optimizer = per_group_model_and_optimizer(network, other)
    train_steps(model, optimizer, 3)
    assert "pretrained" not in optimizer.param_groups[1]
    assert optimizer.state[model[0].weight][STATE_KEY].shape == (4, 20, 20)
    assert optimizer.state[model[2].weight][STATE_KEY].shape == (2, 4, 7)
    # the same as two optimizers, one per layer with its network, stepped together
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    pair = [LearnedOptimizer(reference[0].parameters(), network), LearnedOptimizer(reference[2].parameters(), other)]
    for step in range(3):
        generator = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 5, generator=generator), torch.randn(16, 1, generator=generator)
        reference.zero_grad()
        nn.functional.mse_loss(reference(x), y).backward()
        for single in pair:
            single.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_per_group_networks_survive_state_dicts_pickle_and_deepcopy(network, checkpoint):
    other = random_network(seed=3, hidden_size=7, num_layers=1)
    model, optimizer = per_group_model_and_optimizer(network, other)
    train_steps(model, optimizer, 2)
    saved = optimizer.state_dict()
    assert [entry["config"]["hidden_size"] for entry in saved["group_networks"]] == [20, 7]
    clone_model, clone = per_group_model_and_optimizer(network, other)
    clone_model.load_state_dict(model.state_dict())
    clone.load_state_dict(saved)
    for copied in (clone, copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert [n.hidden_size for n in copied.networks] == [20, 7]
    train_steps(model, optimizer, 2, offset=2)
    train_steps(clone_model, clone, 2, offset=2)
    for a, b in zip(model.parameters(), clone_model.parameters()):
        assert torch.equal(a, b)
    _, wrong = per_group_model_and_optimizer(network, random_network(seed=4, hidden_size=7, num_layers=1))
    with pytest.raises(ValueError, match="param group 1"):
        wrong.load_state_dict(saved)
    _, from_folder = per_group_model_and_optimizer(network, str(checkpoint))  # checkpoint holds `network`
    assert from_folder.networks[1].fingerprint() == network.fingerprint()


def test_bad_group_network_adds_no_group(network):
    optimizer = LearnedOptimizer([nn.Parameter(torch.randn(3))], network)
    with pytest.raises(CheckpointError, match="no-such-checkpoint"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2))], "pretrained": "no-such-checkpoint"})
    with pytest.raises(TypeError, match="pretrained must be"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2))], "pretrained": 0.1})
    assert len(optimizer.param_groups) == len(optimizer.networks) == 1
