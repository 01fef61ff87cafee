"""LearnedOptimizer where models are trained at scale: FSDP2's sharded (DTensor) parameters step on their local
shards, with no gather, and DDP's replicas step alike; both end as one process does."""

import copy

import pytest
import torch

from learned_optim import LearnedOptimizer, kernel

from conftest import torchrun
from fsdp_training import train


def assert_parameters_match(run: dict, single: dict) -> None:
    """A distributed run's parameters against one process's, to 1e-4 relative, 1e-5 absolute."""
    for name, expected in single["params"].items():
        got = run["params"][name]
        if name.endswith("qkv.bias"):  # attention ignores the keys' bias: its gradient is rounding noise, skip it
            got, expected = got.view(3, -1)[[0, 2]], expected.view(3, -1)[[0, 2]]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("scale_rate", [0.0, 0.05])
def test_fsdp2_on_two_processes_steps_each_shard_and_matches_one_unsharded_process(tmp_path, scale_rate):
    out = tmp_path / "sharded.pt"
    torchrun([str(out), "--scale-rate", str(scale_rate)], program=("tests/fsdp_training.py",))
    sharded, single = torch.load(out, weights_only=False), train(False, scale_rate)
    assert_parameters_match(sharded, single)
    assert sharded["paths"] == {"cpu-kernel": sum(1 for _ in single["params"])} or "pytorch" in sharded["paths"]
    ranks = sharded["state_floats_per_rank"]
    assert len(ranks) == 2 and sum(ranks) == single["state_floats"]  # the LSTM state is sharded like the parameters
    assert max(ranks) < 0.6 * single["state_floats"]
    if scale_rate:
        assert sharded["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)
        assert sharded["scale_control"][0][3] == 3  # stepped from the second step on


def test_ddp_on_two_processes_matches_one_process_with_the_defaults_step_scale_control(tmp_path):
    out = tmp_path / "replicated.pt"
    torchrun([str(out), "--ddp", "--scale-rate", "0.01"], program=("tests/fsdp_training.py",))
    replicated, single = torch.load(out, weights_only=False), train(False, 0.01)
    assert_parameters_match(replicated, single)
    assert replicated["state_floats_per_rank"] == [single["state_floats"]] * 2  # each replica keeps the whole state
    assert replicated["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("processes", [2, 1])
def test_a_distributed_checkpoint_resumes_on_the_same_or_another_number_of_processes(tmp_path, processes):
    """torch.distributed.checkpoint saves the sharded LSTM state (DTensors laid out like the parameters, with the
    step-scale controller's state) after step 2 of a 2-process FSDP2 run; resumed on 2 or 1 processes, the run ends
    as an uninterrupted one."""
    folder, out = tmp_path / "checkpoint", tmp_path / "resumed.pt"
    arguments = ["--scale-rate", "0.01"]
    torchrun([str(tmp_path / "killed.pt"), "--save", str(folder), "--stop-after", "2", *arguments],
             program=("tests/fsdp_training.py",))
    torchrun([str(out), "--load", str(folder), *arguments], program=("tests/fsdp_training.py",), processes=processes)
    resumed, single = torch.load(out, weights_only=False), train(False, 0.01)
    assert_parameters_match(resumed, single)
    assert resumed["scale_control"][0] == pytest.approx(single["scale_control"][0], rel=1e-3, abs=1e-7)


def small_model(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).to(dtype)


def batches(steps: int, size: int = 32):
    """Minibatches of a learnable problem: the class is the largest of 4 fixed projections of the input."""
    generator = torch.Generator().manual_seed(1)
    projection = torch.randn(8, 4, generator=generator)
    inputs = [torch.randn(size, 8, generator=generator) for _ in range(steps)]
    return [(x, (x @ projection).argmax(1)) for x in inputs]


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_compiled_model_trains_as_the_eager_one(backend):
    """The graph compiled by aot_eager, and by inductor (torch.compile's default, which builds C++: a slow test)."""
    runs = []
    for compiled in (False, True):
        model = small_model()
        optimizer = LearnedOptimizer(model.parameters())
        forward = torch.compile(model, backend=backend) if compiled else model
        for x, y in batches(4):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            optimizer.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_float32_parameters_on_the_kernel_path():
    model = small_model()
    optimizer = LearnedOptimizer(model.parameters())
    losses = []
    for x, y in batches(60):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])
    assert optimizer.last_step_paths == {"cpu-kernel": 4} or not kernel.available()


def test_grad_scaler_skips_a_step_whose_gradients_overflowed():
    """fp16-style loss scaling: a step whose gradients overflowed moves neither the parameters nor the LSTM state,
    and the scaler halves its scale."""
    model = small_model()
    optimizer = LearnedOptimizer(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for step, (x, y) in enumerate(batches(4)):
        optimizer.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
        if step == 2:
            model[0].weight.grad[0, 0] = float("inf")
            before = [p.detach().clone() for p in model.parameters()], copy.deepcopy(optimizer.state_dict())
        scaler.step(optimizer)
        scaler.update()
        if step == 2:
            assert all(torch.equal(a, b) for a, b in zip(before[0], model.parameters()))
            assert all(torch.equal(a["lstm_state"], b["lstm_state"]) for a, b in
                       zip(before[1]["state"].values(), optimizer.state_dict()["state"].values()))
            assert scaler.get_scale() == 2.0 ** 9


def test_a_scaled_run_without_overflow_equals_the_unscaled_run():
    """The scaler unscales the gradients before the step (its scale is a power of 2: exactly)."""
    runs = []
    for scaled in (False, True):
        model = small_model()
        optimizer = LearnedOptimizer(model.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=scaled)
        for x, y in batches(4):
            optimizer.zero_grad()
            scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
            scaler.step(optimizer)
            scaler.update()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("checkpoint", ["l2o-generalist-3", "l2o-generalist"])  # with, without control and nominal
def test_bf16_parameters_step_by_the_float32_update_rounded_once(checkpoint):
    """A bfloat16 parameter takes the update the rule computes in float32 from its gradient, rounded to bfloat16
    once: as the float32 step of the same values, rounded."""
    low, high = small_model(dtype=torch.bfloat16), small_model()
    high.load_state_dict({k: v.float() for k, v in low.state_dict().items()})
    optimizers = (LearnedOptimizer(low.parameters(), pretrained=checkpoint),
                  LearnedOptimizer(high.parameters(), pretrained=checkpoint))
    x, y = batches(1)[0]
    torch.nn.functional.cross_entropy(low(x.bfloat16()), y).backward()
    for p, q in zip(low.parameters(), high.parameters()):
        q.grad = p.grad.float()
    for optimizer in optimizers:
        optimizer.step()
    for p, q in zip(low.parameters(), high.parameters()):
        assert p.dtype == torch.bfloat16
        torch.testing.assert_close(p, q.bfloat16(), rtol=0, atol=0)


def test_gradient_accumulation_and_clipping_behave_as_with_torch_optim():
    """Two half batches accumulated step as one whole batch; clip_grad_norm_ before the step steps the clipped
    gradient (a twin given the clipped gradient by hand steps alike)."""
    whole, halves = small_model(), small_model()
    optimizers = LearnedOptimizer(whole.parameters()), LearnedOptimizer(halves.parameters())
    for x, y in batches(3):
        for optimizer in optimizers:
            optimizer.zero_grad()
        torch.nn.functional.cross_entropy(whole(x), y).backward()
        for part in range(2):
            torch.nn.functional.cross_entropy(halves(x[part::2]), y[part::2]).div(2).backward()
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(whole.parameters(), halves.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    clipped, twin = small_model(), small_model()
    optimizers = LearnedOptimizer(clipped.parameters()), LearnedOptimizer(twin.parameters())
    for x, y in batches(3):
        for model in (clipped, twin):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).mul(100).backward()
        norm = torch.nn.utils.clip_grad_norm_(clipped.parameters(), max_norm=1.0)
        assert norm > 1.0
        for p in twin.parameters():
            p.grad.mul_(1.0 / (norm + 1e-6))
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(clipped.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)
