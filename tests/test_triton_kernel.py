"""The fused GPU kernel: equal to the PyTorch path through Triton's interpreter (CPU tensors), and on a GPU if any."""

import os
from unittest import mock

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

from learned_optim import LearnedOptimizer, kernel, triton_kernel  # noqa: E402
from learned_optim.functional import fast_update_  # noqa: E402
from learned_optim.pretrained import load  # noqa: E402

from conftest import random_network  # noqa: E402

CONFIGS = [{}, {"num_layers": 1, "preprocessing": "none"}, {"num_layers": 3, "hidden_size": 7},
           {"hidden_size": 7, "preprocessing": "adam", "output": "tanh"},
           {"hidden_size": 7, "preprocessing": "adam", "output": "tanh", "nominal": 0.05}]
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # numpy's sigmoid


def pytorch_path(*args, **kwargs):
    with mock.patch.dict("os.environ", {kernel.ENV_VAR: "0", triton_kernel.ENV_VAR: "0"}):
        return fast_update_(*args, **kwargs)


@pytest.fixture
def interpreter(monkeypatch):
    """The kernel on CPU tensors through Triton's interpreter, which conftest turns on where there is no GPU."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter is on only where there is no CUDA device (see conftest)")
    monkeypatch.setenv(triton_kernel.ENV_VAR, "1")


def lockstep(config, size, state_dtype, device, precision="tf32x3", tolerance=None, network=None):
    """Three steps of the Triton kernel and of the PyTorch path on gradients over 11 decades."""
    network = (random_network(**config) if network is None else network).to(device)
    weights = network.fused_weights()
    state = network.initial_state(size, state_dtype, device).normal_(0, 0.5)
    moments = network.initial_moments(size, device)
    param = torch.randn(size, device=device)
    reference = (state.clone(), param.clone(), None if moments is None else moments.clone())
    if tolerance is None:  # bf16 state: a rounding apart where fp32 values straddle a boundary, then carried on
        tolerance = {} if state_dtype == torch.float32 else {"atol": 4e-2, "rtol": 3e-2}
    for step in range(3):
        grad = torch.randn(size, device=device) * 10.0 ** torch.randint(-9, 3, (size,), device=device)
        options = dict(lr=0.7, decay=0.99, maximize=step == 1)
        assert triton_kernel.supports(weights, grad, state, param, moments)
        triton_kernel.fused_update_(weights, grad, state, out=param, moments=moments, precision=precision, **options)
        pytorch_path(weights, grad, reference[0], out=reference[1], moments=reference[2], **options)
        torch.testing.assert_close(param, reference[1], **tolerance)
        torch.testing.assert_close(state.float(), reference[0].float(), **tolerance)
        if moments is not None:
            torch.testing.assert_close(moments, reference[2])


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("size", [1, 64, 130])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
def test_interpreted_kernel_equals_pytorch_path_in_lockstep(interpreter, config, size, state_dtype):
    lockstep(config, size, state_dtype, "cpu")


def test_interpreted_kernel_returns_the_update_without_out(interpreter):
    network = random_network()
    weights, grad = network.fused_weights(), torch.randn(70)
    update = triton_kernel.fused_update_(weights, grad, network.initial_state(70))
    torch.testing.assert_close(update, pytorch_path(weights, grad, network.initial_state(70)))


def test_the_optimizer_selects_the_kernel_where_it_applies(interpreter, monkeypatch):
    """With the CPU kernel off and the interpreter on, CPU parameters stand in for CUDA ones."""
    monkeypatch.setenv(kernel.ENV_VAR, "0")
    network = random_network(preprocessing="adam", output="tanh")
    models = [nn.Linear(6, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [LearnedOptimizer(model.parameters(), network) for model in models]
    spy = mock.patch.object(triton_kernel, "fused_update_", wraps=triton_kernel.fused_update_)
    for step in range(3):
        for index, (model, optimizer) in enumerate(zip(models, optimizers)):
            optimizer.zero_grad()
            model(torch.randn(8, 6, generator=torch.Generator().manual_seed(step))).pow(2).mean().backward()
            if index == 0:
                with spy as fused:
                    optimizer.step()
                assert fused.call_count == 2
            else:
                with mock.patch.dict("os.environ", {triton_kernel.ENV_VAR: "0"}):
                    optimizer.step()
    for a, b in zip(*(model.parameters() for model in models)):
        torch.testing.assert_close(a, b)


def test_without_triton_or_turned_off_nothing_is_supported(interpreter, monkeypatch):
    network = random_network()
    arguments = (network.fused_weights(), torch.randn(3), network.initial_state(3), None)
    assert triton_kernel.supports(*arguments)
    monkeypatch.setenv(triton_kernel.ENV_VAR, "0")
    assert not triton_kernel.supports(*arguments)
    monkeypatch.delenv(triton_kernel.ENV_VAR)
    monkeypatch.setattr(triton_kernel, "triton", None)
    assert not triton_kernel.supports(*arguments)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not triton_kernel.supports(*arguments)  # CPU tensors never run the compiled kernel


def test_an_invalid_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        LearnedOptimizer(nn.Linear(2, 2).parameters(), random_network(), precision="fp8")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_compiled_kernel_equals_pytorch_path_on_cuda(config, state_dtype, precision):
    lockstep(config, 100_003, state_dtype, "cuda", precision, tolerance=None if state_dtype == torch.bfloat16 else
             {"atol": 1e-5, "rtol": 1e-4})


@needs_cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_compiled_reduced_precision_stays_close_on_cuda(precision):
    """Updates and state within 1e-2 after three steps, with a trained network (a random one's O(1) weights amplify
    any rounding); Triton's interpreter does not emulate reduced-precision dots, so this runs on a GPU only. The
    effect on training: benchmarks/gpu_step.py."""
    lockstep({}, 100_003, torch.float32, "cuda", precision, {"atol": 1e-2, "rtol": 3e-2}, load("l2l-mnist"))
