import math

import pytest
import torch

from learned_optim.preprocessing import (LONG_MOMENT_DECAY, MOMENT_DECAY, adam_normalised,
                                         adam_two_timescales, identity, log_sign)


def piecewise(x: float, p: float) -> tuple[float, float]:
    """The paper's definition, written out."""
    if abs(x) >= math.exp(-p):
        return math.log(abs(x)) / p, math.copysign(1.0, x)
    return -1.0, math.exp(p) * x


@pytest.mark.parametrize("p", [5.0, 10.0])
def test_log_sign_matches_the_papers_piecewise_definition(p):
    values = [0.0, 1e-30, -1e-30, 1e-6, -3e-5, 4.5e-5, 0.1, -1.0, 7.0, -1e20, 3e38]
    features = log_sign(torch.tensor(values, dtype=torch.float64), p)
    expected = torch.tensor([piecewise(v, p) for v in values], dtype=torch.float64)
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_log_sign_is_finite_and_bounded_for_extreme_finite_input(dtype):
    info = torch.finfo(dtype)
    x = torch.tensor([0.0, -0.0, info.tiny, -info.tiny, info.max, -info.max, 1.0, -1.0], dtype=dtype)
    features = log_sign(x, 10.0)
    assert features.shape == (8, 2) and features.dtype == dtype
    assert torch.isfinite(features).all()
    assert (features[:, 1].abs() <= 1).all()
    assert features[0].tolist() == [-1.0, 0.0]


def test_log_sign_rejects_non_positive_p():
    with pytest.raises(ValueError, match="p"):
        log_sign(torch.ones(3), 0.0)


def test_identity_is_one_raw_feature():
    x = torch.randn(5)
    assert torch.equal(identity(x), x[:, None])


def test_adam_normalised_matches_adams_bias_corrected_moments_written_out():
    beta, grads = 0.95, torch.randn(6, 5, dtype=torch.float64)
    moments = torch.zeros(3, 5, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        features, moments = adam_normalised(g, moments, beta)
        m_hat = sum((1 - beta) * beta ** (t - k) * grads[k - 1] for k in range(1, t + 1)) / (1 - beta**t)
        v_hat = sum((1 - beta) * beta ** (t - k) * grads[k - 1] ** 2 for k in range(1, t + 1)) / (1 - beta**t)
        torch.testing.assert_close(features, torch.stack((g, m_hat), -1) / v_hat.sqrt()[:, None])


def test_adam_normalised_is_invariant_to_the_gradients_scale_and_bounded():
    grads = torch.randn(20, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for scale in (1e-6, 1.0, 1e6):
        moments, outputs = torch.zeros(3, 1000, dtype=torch.float64), []
        for g in grads:
            features, moments = adam_normalised(g * scale, moments)
            outputs.append(features)
        results.append(torch.stack(outputs))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)  # epsilon = 1e-12 still counts
    torch.testing.assert_close(results[2], results[1])
    assert results[1].abs().max() <= 1 / math.sqrt(1 - MOMENT_DECAY) + 1e-9


def test_adam_normalised_is_finite_for_zero_and_extreme_gradients():
    x = torch.tensor([0.0, 0.0, 3e38, -3e38, 1e-30])
    features, moments = adam_normalised(x, torch.zeros(3, 5))
    assert torch.isfinite(features).all() and torch.isfinite(moments[:, [0, 1, 4]]).all()
    assert features[0].abs().sum() == 0


def test_adam_two_timescales_adds_the_log_ratio_of_recent_to_long_term_rms():
    decays, grads = (0.95, 0.999), torch.randn(308, 5, dtype=torch.float64)
    grads[8:] *= 0.01  # the gradients shrink: the recent RMS falls below the long-term one
    moments, short = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    for g in grads:
        features, moments = adam_two_timescales(g, moments, *decays)
        expected, short = adam_normalised(g, short, decays[0])
        torch.testing.assert_close(features[:, :2], expected)
    t = len(grads)
    v_hat, long_v_hat = [sum((1 - b) * b ** (t - k) * grads[k - 1] ** 2 for k in range(1, t + 1)) / (1 - b**t)
                         for b in decays]  # Adam's bias-corrected second moments, written out
    torch.testing.assert_close(features[:, 2], 0.5 * (v_hat / long_v_hat).log())
    assert features[:, 2].max() < -1 and moments.shape == (5, 5)


def test_adam_two_timescales_is_invariant_to_the_gradients_scale_and_finite():
    grads = torch.randn(30, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for scale in (1e-3, 1.0, 1e6):
        moments, outputs = torch.zeros(5, 100, dtype=torch.float64), []
        for g in grads:
            features, moments = adam_two_timescales(g * scale, moments)
            outputs.append(features)
        results.append(torch.stack(outputs))
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[2], results[1])
    assert results[1][..., 2].max() <= 0.5 * math.log((1 - MOMENT_DECAY) / (1 - LONG_MOMENT_DECAY)) + 1e-9
    features, moments = adam_two_timescales(torch.tensor([0.0, 3e38, -3e38, 1e-30]), torch.zeros(5, 4))
    assert torch.isfinite(features).all() and features[0].abs().sum() == 0
