"""The fused CPU kernel: equal to the PyTorch path in lockstep, its build cache, and the fallback."""

import ctypes
import multiprocessing
import os
import stat
import subprocess
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch

from learned_optim import LearnedOptimizer, kernel
from learned_optim.functional import execution_path, fast_update_
from learned_optim.fusion import PreparedWeights
from learned_optim.pretrained import load

from conftest import missing, random_network


@pytest.fixture
def compiled_kernel():
    """Skips, or fails under CI, where the fused kernel cannot be built (no C++ compiler)."""
    if not kernel.available():
        missing("the fused CPU kernel, which needs a C++ compiler")


needs_kernel = pytest.mark.usefixtures("compiled_kernel")


def pytorch_path(*args, **kwargs):
    with mock.patch.dict("os.environ", {kernel.ENV_VAR: "0"}):
        return fast_update_(*args, **kwargs)


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """A kernel module that has loaded nothing yet, building into an empty cache."""
    monkeypatch.setenv(kernel.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(kernel, "_library", None)
    return tmp_path / "kernels"


@needs_kernel
@pytest.mark.parametrize("config", [{}, {"num_layers": 1, "preprocessing": "none"}, {"num_layers": 3, "hidden_size": 7},
                                    {"hidden_size": 7, "preprocessing": "adam", "output": "tanh"},
                                    {"hidden_size": 7, "preprocessing": "adam", "output": "tanh", "nominal": 0.05}])
@pytest.mark.parametrize("size", [1, 15, 16, 17, 31, 32, 33, 100])  # around tiles of 16 (AVX2) and 32
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_kernel_equals_pytorch_path_in_lockstep(config, size, state_dtype):
    """Five steps of both paths on gradients over 11 decades, with an output, weight decay and maximize."""
    network = random_network(**config)
    weights = network.fused_weights()
    state = network.initial_state(size, state_dtype)
    state.normal_(0, 0.5)
    moments = network.initial_moments(size)
    param = torch.randn(size)
    reference_state, reference_param = state.clone(), param.clone()
    reference_moments = None if moments is None else moments.clone()
    for step in range(5):
        grad = torch.randn(size) * 10.0 ** torch.randint(-9, 3, (size,))
        options = dict(lr=0.7, decay=0.99, maximize=step % 2 == 1)
        assert kernel.supports(weights, grad, state, param, moments)
        fast_update_(weights, grad, state, out=param, moments=moments, **options)
        pytorch_path(weights, grad, reference_state, out=reference_param, moments=reference_moments, **options)
        # bf16 state: one bf16 step apart where the two paths' fp32 values straddle a rounding boundary
        tolerance = {} if state_dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
        torch.testing.assert_close(param, reference_param, **tolerance)
        torch.testing.assert_close(state.float(), reference_state.float(), **tolerance)
        if moments is not None:
            torch.testing.assert_close(moments, reference_moments)
    copies = [None if moments is None else moments.clone() for _ in range(2)]
    update = fast_update_(weights, grad, state.clone(), moments=copies[0])
    torch.testing.assert_close(update, pytorch_path(weights, grad, state.clone(), moments=copies[1]), **tolerance)


@needs_kernel
@pytest.mark.parametrize("size", [5, 32, 100])
def test_bfloat16_state_is_the_float32_kernels_state_rounded_to_nearest_even(size):
    """From the same bfloat16-exact state, one step with the state stored in bfloat16 gives exactly the float32
    kernel's new state rounded as torch rounds (to nearest even; NaN stays NaN), and the same update."""
    network = random_network(hidden_size=7, preprocessing="adam", output="tanh")
    weights, grad = network.fused_weights(), torch.randn(size) * 10.0 ** torch.randint(-6, 1, (size,))
    state = network.initial_state(size).normal_(0, 0.5).bfloat16().float()
    state[1, 0, 0] = float("nan")  # a NaN in a cell state stays NaN
    low = state.bfloat16()
    update = fast_update_(weights, grad, state, moments=network.initial_moments(size))
    low_update = fast_update_(weights, grad, low, moments=network.initial_moments(size))
    torch.testing.assert_close(low.float(), state.bfloat16().float(), equal_nan=True, atol=0, rtol=0)
    torch.testing.assert_close(low_update, update, equal_nan=True, atol=0, rtol=0)


@needs_kernel
def test_threads_split_the_coordinates_with_identical_results(network):
    weights, size = network.fused_weights(), 5 * kernel.MIN_COORDINATES_PER_THREAD + 3
    grad, before = torch.randn(size), torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            state = network.initial_state(size)
            results.append((fast_update_(weights, grad, state), state))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def _two_thread_update(weights, grad, state):
    """The kernel's update of ``grad`` on two threads (the caller and a helper), ``state`` stepped in place."""
    out = torch.zeros_like(grad)
    kernel.fused_update_many_(weights, [grad], [state], [out], [None], max_threads=2)
    return out


def _threads_of_this_process() -> int:
    return len(os.listdir("/proc/self/task"))


def _forked_child_update(weights, grad, state, expected, results):
    torch.set_num_threads(1)  # as a DataLoader worker does: torch's OpenMP threads do not survive a fork
    threads = _threads_of_this_process()
    update = _two_thread_update(weights, grad, state)
    results.put((torch.equal(update, expected[0]) and torch.equal(state, expected[1]),
                 _threads_of_this_process() - threads))


@needs_kernel
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in Linux's /proc/self/task")
def test_a_forked_child_steps_on_helpers_of_its_own(network):
    """A child forked after the parent's helpers started (a DataLoader worker) has none of its threads: it starts
    its own helper and steps like the parent."""
    weights, size = network.fused_weights(), 8 * kernel.MIN_COORDINATES_PER_THREAD
    grad, state = torch.randn(size), network.initial_state(size).normal_(0, 0.5)
    child_state = state.clone()
    expected = _two_thread_update(weights, grad, state)  # the parent's helper is running now
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    child = context.Process(target=_forked_child_update,
                            args=(weights, grad, child_state, (expected, state), results))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    same, started = results.get()
    assert same and started == 1  # the parent's results, with one helper of its own: the call was split


@needs_kernel
def test_concurrent_calls_from_several_threads_each_step_their_own_tensors(network):
    """Two Python threads stepping at once (ctypes releases the GIL): one call has the helpers, the other runs
    alone; each gets its own result."""
    weights, size = network.fused_weights(), 4 * kernel.MIN_COORDINATES_PER_THREAD + 5
    grads = [torch.randn(size) for _ in range(2)]
    states = [network.initial_state(size).normal_(0, 0.5) for _ in range(2)]
    expected = []
    for grad, state in zip(grads, states):
        state = state.clone()
        expected.append([(_two_thread_update(weights, grad, state), state.clone()) for _ in range(30)])
    got = [[], []]

    def steps(k):
        for _ in range(30):
            got[k].append((_two_thread_update(weights, grads[k], states[k]), states[k].clone()))

    workers = [threading.Thread(target=steps, args=(k,)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for mine, theirs in zip(got, expected):
        assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(mine, theirs))


@needs_kernel
@pytest.mark.parametrize("config", [{}, {"hidden_size": 7, "preprocessing": "adam", "output": "tanh"},
                                    {"hidden_size": 7, "preprocessing": "adam", "output": "tanh", "nominal": 0.05}])
def test_many_tensors_in_one_call_equal_one_call_each(config, monkeypatch):
    """Tensors of 1-100 coordinates (one empty), float32 and bfloat16 states, split over two threads mid-tensor."""
    network = random_network(**config)
    # 14 tiles of 16 or 9 of 32: thread 2 starts in tile 1 of 100 either way
    weights, sizes = network.fused_weights(), [1, 17, 0, 40, 100, 16]
    grads = [torch.randn(n) * 10.0 ** torch.randint(-9, 3, (n,)) for n in sizes]
    states = [network.initial_state(n, torch.bfloat16 if k % 2 else torch.float32).normal_(0, 0.5)
              for k, n in enumerate(sizes)]
    moments = [network.initial_moments(n) for n in sizes]
    params = [torch.randn(n) for n in sizes]
    copies = [[None if t is None else t.clone() for t in tensors] for tensors in (states, moments, params)]
    options = dict(lr=0.7, decay=0.99, maximize=True)
    for grad, state, moment, param in zip(grads, *copies):
        kernel.fused_update_(weights, grad, state, out=param, moments=moment, **options)
    monkeypatch.setattr(kernel, "MIN_COORDINATES_PER_THREAD", 16)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kernel.fused_update_many_(weights, grads, states, params, moments, **options)
    finally:
        torch.set_num_threads(before)
    for got, expected in zip(states + params + moments, copies[0] + copies[2] + copies[1]):
        assert (got is None and expected is None) or torch.equal(got, expected)


@needs_kernel
def test_optimizer_updates_a_groups_parameters_in_one_kernel_call(network):
    params = [torch.nn.Parameter(torch.randn(n)) for n in (3, 30, 300)]
    other = torch.nn.Parameter(torch.randn(5))
    optimizer = LearnedOptimizer([{"params": params}, {"params": [other], "lr": 0.5}], network)
    for p in params + [other]:
        p.grad = torch.randn_like(p)
    with mock.patch.object(kernel, "fused_update_many_", wraps=kernel.fused_update_many_) as spy:
        optimizer.step()
    assert [len(call.args[1]) for call in spy.call_args_list] == [3, 1]
    assert [call.kwargs["lr"] for call in spy.call_args_list] == [1.0, 0.5]


@needs_kernel
def test_optimizer_on_the_kernel_matches_the_pytorch_path(network):
    """Ten steps of LearnedOptimizer, with weight decay, a non-contiguous and a bfloat16 parameter."""
    def run():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(30, 40).t()), torch.nn.Parameter(torch.randn(50)),
                  torch.nn.Parameter(torch.randn(20).bfloat16())]
        optimizer = LearnedOptimizer(params, network, weight_decay=0.01)
        for _ in range(10):
            for p in params:
                p.grad = torch.sin(3 * p.detach())
            optimizer.step()
        return params

    with_kernel = run()
    with mock.patch.dict("os.environ", {kernel.ENV_VAR: "0"}):
        without = run()
    for got, expected in zip(with_kernel, without):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_disabled_kernel_is_not_used(network, monkeypatch):
    monkeypatch.setenv(kernel.ENV_VAR, "0")
    assert not kernel.available()
    assert not kernel.supports(network.fused_weights(), torch.randn(3), network.initial_state(3), None)


@needs_kernel
def test_unsupported_arguments_take_the_pytorch_path(network):
    weights = network.fused_weights()
    assert not kernel.supports(weights, torch.randn(3), network.initial_state(3, torch.float64), None)
    assert not kernel.supports(weights, torch.randn(3), network.initial_state(3), torch.zeros(3, dtype=torch.float64))
    assert not kernel.supports(network.double().fused_weights(), torch.randn(3), network.initial_state(3), None)


def test_build_is_cached_and_atomic(fresh_kernel):
    if kernel._compiler() is None:
        missing("a C++ compiler")
    assert kernel.available()
    built = list(fresh_kernel.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no partial file left behind
    with mock.patch.object(subprocess, "run", side_effect=AssertionError("compiled twice")):
        assert kernel._build(kernel._compiler(), kernel.FLAGS) == built[0]


@pytest.mark.parametrize("lanes", [8, 16])
def test_every_vector_width_equals_the_pytorch_path(fresh_kernel, monkeypatch, lanes):
    """The build for AVX2 (8 floats a vector, tiles of 16) and for AVX-512 (16, tiles of 32), whichever this CPU
    picks by default; tensors of 1-100 coordinates over two threads, float32 and bfloat16 states."""
    if kernel._compiler() is None:
        missing("a C++ compiler")
    monkeypatch.setattr(kernel, "FLAGS", kernel.FLAGS + (f"-DLANES={lanes}",))
    monkeypatch.setattr(kernel, "MIN_COORDINATES_PER_THREAD", 16)
    assert kernel.available() and kernel._library.tile == 2 * lanes
    assert lanes == 16 or not kernel.bf16_dot()  # bfloat16 dot products come with AVX-512 only
    network = random_network(hidden_size=7, preprocessing="adam", output="tanh", nominal=0.05)
    weights, sizes = network.fused_weights(), [1, 2 * lanes - 1, 2 * lanes + 1, 100]
    grads = [torch.randn(n) * 10.0 ** torch.randint(-9, 3, (n,)) for n in sizes]
    states = [network.initial_state(n).normal_(0, 0.5) for n in sizes]
    moments, params = [network.initial_moments(n) for n in sizes], [torch.randn(n) for n in sizes]
    expected = [(s.clone(), p.clone()) for s, p in zip(states, params)]
    for g, (s, p), m in zip(grads, expected, moments):
        pytorch_path(weights, g, s, out=p, moments=m.clone(), lr=0.7)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kernel.fused_update_many_(weights, grads, states, params, moments, lr=0.7)
    finally:
        torch.set_num_threads(before)
    for state, param, (expected_state, expected_param) in zip(states, params, expected):
        torch.testing.assert_close(state, expected_state)
        torch.testing.assert_close(param, expected_param)
    bf16_state = network.initial_state(100, torch.bfloat16).normal_(0, 0.5)
    update = kernel.fused_update_(weights, grads[-1], bf16_state.clone(), moments=network.initial_moments(100))
    reference = pytorch_path(weights, grads[-1], bf16_state.clone(), moments=network.initial_moments(100))
    torch.testing.assert_close(update, reference, atol=1e-2, rtol=1e-2)


def test_bfloat16_pairs_put_even_rows_in_the_low_half_and_pad_an_odd_row_count():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1 + 2**-10, 5.0]])  # 1 + 2**-10 rounds to 1 in bfloat16
    pairs = kernel.bfloat16_pairs(weight)
    assert pairs.shape == (2, 2) and pairs.dtype == torch.int32
    halves = pairs.view(torch.bfloat16).view(2, 2, 2).float()  # little-endian: the low half first
    assert halves.tolist() == [[[1.0, 3.0], [2.0, 4.0]], [[1.0, 0.0], [5.0, 0.0]]]


needs_bf16_dot = pytest.mark.skipif(not kernel.bf16_dot(), reason="bfloat16 matmuls need a CPU with AVX-512-BF16")


@needs_bf16_dot
@pytest.mark.parametrize("hidden_size", [6, 7])  # 7 and 8 rows of weights: with and without the padding row
def test_bf16_matmuls_are_exact_where_their_operands_are_bfloat16(hidden_size):
    """One layer reading the raw gradient: with weights, gradient and hidden state already bfloat16, rounding changes
    nothing, so the bfloat16 kernel equals the float32 PyTorch path up to the order of the float32 sums (a wrong
    pairing of rows and weights would not)."""
    network = random_network(num_layers=1, hidden_size=hidden_size, preprocessing="none")
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(p.bfloat16().float())
    weights = network.fused_weights()
    grad = torch.randn(100).bfloat16().float()
    state = network.initial_state(100).normal_(0, 0.5)
    state[0] = state[0].bfloat16().float()  # h; c is not a matmul operand
    expected_state = state.clone()
    expected = pytorch_path(weights, grad, expected_state)
    update = fast_update_(weights, grad, state, precision="bf16")
    torch.testing.assert_close(update, expected)
    torch.testing.assert_close(state, expected_state)


@needs_bf16_dot
def test_bf16_matmuls_stay_close_to_float32_over_steps():
    """A published network in lockstep with the float32 PyTorch path for 5 steps: close, and not equal (so the
    bfloat16 matmuls did run)."""
    network = load("l2l-mnist")
    weights, size = network.fused_weights(), 1000
    state = network.initial_state(size)
    reference_state, param = state.clone(), torch.randn(size)
    reference_param = param.clone()
    for _ in range(5):
        grad = torch.randn(size) * 10.0 ** torch.randint(-6, 0, (size,))
        fast_update_(weights, grad, state, out=param, precision="bf16")
        pytorch_path(weights, grad, reference_state, out=reference_param)
    torch.testing.assert_close(param, reference_param, atol=1e-3, rtol=0)
    torch.testing.assert_close(state, reference_state, atol=3e-2, rtol=3e-2)
    assert not torch.equal(state, reference_state)


@needs_kernel
def test_optimizer_passes_its_precision_to_the_kernel(network):
    param = torch.nn.Parameter(torch.randn(10))
    param.grad = torch.randn(10)
    with mock.patch.object(kernel, "fused_update_many_", wraps=kernel.fused_update_many_) as spy:
        LearnedOptimizer([param], network, precision="bf16").step()
    assert spy.call_args.kwargs["precision"] == "bf16"


def test_build_is_readable_by_every_user_and_stale_builds_are_pruned(fresh_kernel):
    if kernel._compiler() is None:
        missing("a C++ compiler")
    fresh_kernel.mkdir(parents=True)
    stale, recent, foreign = (fresh_kernel / f"lstm_step-{name}" for name in ("old.so", "recent.so", "x.partial"))
    for path in (stale, recent, foreign):
        path.write_bytes(b"not a library")
    month_ago = time.time() - (kernel.STALE_DAYS + 1) * 86_400
    os.utime(stale, (month_ago, month_ago))
    os.utime(foreign, (month_ago, month_ago))
    assert kernel.available()
    built = kernel._build(kernel._compiler(), kernel.FLAGS)
    assert stat.S_IMODE(built.stat().st_mode) == 0o755
    assert sorted(path.name for path in fresh_kernel.iterdir()) == sorted([built.name, recent.name])


def test_cache_follows_xdg_cache_home_unless_learned_optim_cache_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv(kernel.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernel._cache_dir() == tmp_path / "xdg" / "learned_optim" / "kernels"
    monkeypatch.setenv(kernel.CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert kernel._cache_dir() == tmp_path / "mine" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(kernel.CACHE_ENV_VAR)
    assert kernel._cache_dir() == Path.home() / ".cache" / "learned_optim" / "kernels"


def test_a_library_that_does_not_load_is_said_not_worked_around(fresh_kernel, monkeypatch):
    if kernel._compiler() is None:
        missing("a C++ compiler")
    loaded = []

    def cdll(path):
        loaded.append(path)
        raise OSError("lstm_step.so: invalid ELF header")

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    with pytest.warns(RuntimeWarning, match="invalid ELF header"):
        assert not kernel.available()
    assert len(loaded) == 1


def test_missing_compiler_falls_back_with_one_warning(fresh_kernel, monkeypatch, network):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found .*set CXX"):
        assert not kernel.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not kernel.available()
        update = fast_update_(network.fused_weights(), torch.randn(5), network.initial_state(5))
    assert update.shape == (5,) and torch.isfinite(update).all()


def test_failing_compiler_falls_back_with_its_message_and_leaves_no_file(fresh_kernel, monkeypatch, tmp_path):
    compiler, calls = tmp_path / "broken-c++", tmp_path / "calls"
    compiler.write_text(f"#!/bin/sh\necho called >> {calls}\necho 'broken toolchain' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.warns(RuntimeWarning, match="broken toolchain"):
        assert not kernel.available()
    assert list(fresh_kernel.iterdir()) == []
    assert calls.read_text().count("called") == 1


@needs_kernel
def test_prepared_network_arguments_are_bounded_and_follow_their_weights():
    for seed in range(kernel._prepared.size + 3):
        network = random_network(seed=seed)
        weights = network.fused_weights()
        grad, state = torch.randn(20), network.initial_state(20)
        torch.testing.assert_close(fast_update_(weights, grad, state.clone()),
                                   pytorch_path(weights, grad, state.clone()))
    assert len(kernel._prepared.entries) <= kernel._prepared.size


def test_prepared_weights_are_computed_once_per_weights_object_and_the_oldest_dropped():
    calls = []
    prepared = PreparedWeights(lambda weights: calls.append(weights) or len(calls), size=2)
    first, second, third = object(), object(), object()
    assert [prepared(first), prepared(first), prepared(second)] == [1, 1, 2]
    assert prepared(third) == 3 and prepared(second) == 2 and prepared(first) == 4  # first was dropped
    assert calls == [first, second, third, first] and len(prepared.entries) == 2


def test_no_kernel_is_handed_a_tensor_subclass(network):
    class Wrapped(torch.Tensor):
        pass

    weights, grad = network.fused_weights(), torch.randn(8)
    state, out = network.initial_state(8), torch.zeros(8)
    assert execution_path(weights, grad, state, out) in ("cpu-kernel", "pytorch")
    for wrapped in ({"grad": grad.as_subclass(Wrapped)}, {"state": state.as_subclass(Wrapped)},
                    {"out": out.as_subclass(Wrapped)}):
        arguments = {"grad": grad, "state": state, "out": out, **wrapped}
        assert execution_path(weights, **arguments) == "pytorch"
        assert not kernel.supports(weights, arguments["grad"], arguments["state"], arguments["out"])
