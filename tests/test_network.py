import json
import math

import pytest
import torch

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer
from learned_optim.functional import chunked_update, fast_update_, reference_update
from learned_optim.preprocessing import log_sign

from conftest import random_network


@pytest.mark.parametrize("config", [{}, {"num_layers": 3, "hidden_size": 7, "preprocessing": "none"}])
def test_fused_lstm_equals_nn_lstmcell(config):
    network = random_network(**config)
    grad = torch.randn(300) * 10.0 ** torch.randint(-8, 3, (300,))
    state = [torch.randn(300, network.hidden_size) for _ in range(2 * network.num_layers)]
    update, new_state = network(grad, state)

    x = log_sign(grad, network.p) if network.preprocessing == "log_sign" else grad[:, None]
    expected_state = []
    for layer, cell in enumerate(network.cells):
        h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
        expected_state += [h, c]
        x = h
    torch.testing.assert_close(update, network.head(x).squeeze(1) * network.output_scale)
    for got, expected in zip(new_state, expected_state):
        torch.testing.assert_close(got, expected)


ADAM_TANH = {"preprocessing": "adam", "output": "tanh"}
TWO_TIMESCALES = {"preprocessing": "adam_two_timescales"}
NOMINAL = {**ADAM_TANH, "nominal": 0.05}


@pytest.mark.parametrize("config", [{}, ADAM_TANH, TWO_TIMESCALES, NOMINAL])
@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1, 7, 16384])
def test_fast_path_equals_reference_path_in_lockstep(config, state_dtype, chunk_size):
    network = random_network(**config)
    weights = network.fused_weights()
    state, moments = network.initial_state(50, dtype=state_dtype), network.initial_moments(50)
    reference_state = (*state.clone(), *([] if moments is None else [moments.clone()]))
    for _ in range(5):
        grad = torch.randn(50) * 10.0 ** torch.randint(-6, 2, (50,))
        expected, reference_state = reference_update(weights, grad, reference_state)
        got = fast_update_(weights, grad, state, chunk_size, moments=moments)
        if moments is not None:
            torch.testing.assert_close(moments, reference_state[-1])
        # bf16 state: the paths round fp32 intermediates differently before the bf16 store
        tolerance = {} if state_dtype == torch.float32 else {"atol": 1e-3, "rtol": 2e-2}
        torch.testing.assert_close(got, expected, **tolerance)
        for stored, expected_state in zip(state, reference_state):
            torch.testing.assert_close(stored.float(), expected_state.float(), **tolerance)
            assert stored.dtype == state_dtype


@pytest.mark.parametrize("config", [{}, {"num_layers": 1, "preprocessing": "none"}, {"num_layers": 3, "hidden_size": 7},
                                    ADAM_TANH, TWO_TIMESCALES, NOMINAL])
@pytest.mark.parametrize("chunk_size", [5, 8192])
def test_chunked_backward_equals_autograd_through_two_steps(config, chunk_size):
    """Values and gradients (weights and initial state) of a two-step unroll, in float64."""
    network = random_network(**config).double()
    grads = [torch.randn(37, dtype=torch.float64) * 1e-2, torch.randn(37, dtype=torch.float64)]
    state = tuple(torch.randn(37, network.hidden_size, dtype=torch.float64).requires_grad_()
                  for _ in range(2 * network.num_layers))
    moments = () if not network.num_moments else (network.initial_moments(37).double(),)
    weight = torch.randn(37, dtype=torch.float64)

    def unroll(update_fn):
        weights, current, outputs = network.fused_weights(), (*state, *moments), []
        for grad in grads:
            update, current = update_fn(weights, grad, current)
            outputs.append(update)
        loss = (outputs[0] * weight).sum() + outputs[1].pow(2).sum() + sum(s.pow(2).sum() for s in current) / 10
        return [*outputs, *current], torch.autograd.grad(loss, [*network.parameters(), *state])

    expected, expected_grads = unroll(reference_update)
    got, got_grads = unroll(lambda weights, grad, current: chunked_update(weights, grad, current, chunk_size))
    for a, b in zip([*got, *got_grads], [*expected, *expected_grads]):
        torch.testing.assert_close(a, b)


def test_coordinatewise_permuting_coordinates_permutes_updates(network):
    grad, perm = torch.randn(64), torch.randperm(64)
    state = [torch.randn(64, 20) for _ in range(4)]
    update, new_state = network(grad, state)
    permuted_update, permuted_state = network(grad[perm], [s[perm] for s in state])
    torch.testing.assert_close(permuted_update, update[perm])
    torch.testing.assert_close(permuted_state[3], new_state[3][perm])


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="preprocessing"):
        CoordinatewiseLSTM(preprocessing="log")
    with pytest.raises(ValueError, match="output"):
        CoordinatewiseLSTM(output="relu")


def test_options_round_trip_and_the_papers_defaults_keep_the_old_config(tmp_path):
    assert "output" not in CoordinatewiseLSTM().config  # checkpoints saved before the option keep their fingerprint
    network = random_network(**ADAM_TANH)
    network.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["output"] == "tanh"
    loaded = CoordinatewiseLSTM.from_pretrained(tmp_path)
    assert loaded.config == network.config and loaded.fingerprint() == network.fingerprint()
    grad = torch.randn(9)
    state = (*network.initial_state(9), network.initial_moments(9))
    torch.testing.assert_close(loaded(grad, state)[0], network(grad, state)[0])


def test_a_stateful_encoding_without_its_moments_is_a_clear_error():
    network = random_network(**ADAM_TANH)
    with pytest.raises(ValueError, match="moments"):
        network(torch.randn(4), network.initial_state(4))
    with pytest.raises(ValueError, match="initial_moments"):
        fast_update_(network.fused_weights(), torch.randn(4), network.initial_state(4))
    with pytest.raises(ValueError, match="p"):
        CoordinatewiseLSTM(p=-1.0)
    with pytest.raises(ValueError, match="nominal term .* needs an encoding"):
        CoordinatewiseLSTM(nominal=0.1)
    for rate in (-0.05, math.nan):
        with pytest.raises(ValueError, match="Invalid nominal rate.*>= 0"):
            CoordinatewiseLSTM(preprocessing="adam", nominal=rate)


def test_a_nominal_term_round_trips_and_with_a_silent_head_is_adam():
    """With the head's output zeroed, a network with a nominal term steps as Adam with beta1 = beta2 = 0.95."""
    network = random_network(**NOMINAL)
    assert "nominal" not in CoordinatewiseLSTM(**ADAM_TANH).config  # older checkpoints keep their config
    with torch.no_grad():
        network.head.weight.zero_(), network.head.bias.zero_()
    param = torch.randn(30, requires_grad=True)
    reference = param.detach().clone().requires_grad_()
    ours = LearnedOptimizer([param], network)
    adam = torch.optim.Adam([reference], lr=0.05, betas=(0.95, 0.95), eps=0.0)
    for step in range(5):
        grad = torch.randn(30) * 10.0 ** -step
        param.grad, reference.grad = grad.clone(), grad.clone()
        ours.step(), adam.step()
        torch.testing.assert_close(param, reference)


def test_with_nominal_adds_the_nominal_term_to_the_same_weights():
    """``with_nominal(rate)`` is the network built with ``nominal=rate`` and loaded with these weights: its step is this
    network's plus ``-rate * m / sqrt(v)`` (Adam with beta1 = beta2 = 0.95)."""
    network = random_network(**ADAM_TANH)
    added = network.with_nominal(0.05)
    assert added.config == {**network.config, "nominal": 0.05} and added.with_nominal(0.0).config == network.config
    assert all(torch.equal(a, b) for a, b in zip(added.state_dict().values(), network.state_dict().values()))
    params = [torch.randn(30, requires_grad=True) for _ in range(3)]
    ours, plain = LearnedOptimizer([params[0]], added), LearnedOptimizer([params[1]], network)
    adam = torch.optim.Adam([params[2]], lr=0.05, betas=(0.95, 0.95), eps=0.0)
    with torch.no_grad():
        params[1].copy_(params[0]), params[2].copy_(params[0])
    start = params[0].detach().clone()
    for _ in range(3):
        grad = torch.randn(30)
        for param in params:
            param.grad = grad.clone()
        ours.step(), plain.step(), adam.step()
    torch.testing.assert_close(params[0] - start, (params[1] - start) + (params[2] - start))
    with pytest.raises(ValueError, match="nominal term .* needs an encoding"):
        random_network().with_nominal(0.05)


@pytest.mark.parametrize("config", [NOMINAL, {}])
def test_a_step_scaled_network_steps_as_lr_scale(config):
    """``with_step_scale(s)`` is ``lr=s`` as a network of its own: ``output_scale`` and the nominal rate times s."""
    network = random_network(**config)
    scaled = network.with_step_scale(1.5)
    assert network.output_scale == 0.1  # 0.1 x 1.5 and 0.05 x 1.5, rounded off
    assert scaled.config == {**network.config, "output_scale": 0.15, **({"nominal": 0.075} if network.nominal else {})}
    params = [torch.randn(40, requires_grad=True) for _ in range(2)]
    ours, reference = LearnedOptimizer([params[0]], scaled), LearnedOptimizer([params[1]], network, lr=1.5)
    with torch.no_grad():
        params[1].copy_(params[0])
    for _ in range(4):
        grad = torch.randn(40)
        params[0].grad, params[1].grad = grad.clone(), grad.clone()
        ours.step(), reference.step()
    torch.testing.assert_close(params[0], params[1])
    for scale in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="Invalid step scale.*finite and > 0"):
            network.with_step_scale(scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_fast_path_updates_out_in_place_as_decay_times_out_plus_lr_times_update(network, dtype):
    grad = torch.randn(23)
    update = fast_update_(network.fused_weights(), grad, network.initial_state(23), chunk_size=5)
    param = torch.randn(23, dtype=dtype)
    expected = (param.double() * 0.99 + 0.5 * update.double()).to(dtype)
    returned = fast_update_(network.fused_weights(), grad, network.initial_state(23), chunk_size=5, out=param,
                            lr=0.5, decay=0.99)
    assert returned is param
    tolerance = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}  # decay and add round separately
    torch.testing.assert_close(param, expected, **tolerance)


def test_in_place_step_equals_forward_and_updates_the_stacked_state(network):
    grad, state = torch.randn(40), torch.randn(2 * network.num_layers, 40, network.hidden_size)
    expected_update, expected_state = network(grad, tuple(state))
    update = network.inference_step()(grad, state)
    torch.testing.assert_close(update, expected_update.detach())
    torch.testing.assert_close(tuple(state), tuple(s.detach() for s in expected_state))
