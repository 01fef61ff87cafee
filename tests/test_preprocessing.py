import math

import pytest
import torch

from learned_optim.preprocessing import identity, log_sign


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
