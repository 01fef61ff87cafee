"""Gradient encodings fed to the coordinatewise LSTM.

Each maps a flat gradient ``x`` of shape ``[N]`` to features of shape ``[N, F]``: the paper's
:func:`log_sign` (Andrychowicz et al., 2016, appendix A) and :func:`identity` are pure functions of the
gradient; :func:`adam_normalised` (Lv et al., 2017) also reads and returns per-coordinate moments.
They work in the dtype they are given and return finite features for finite input.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor


def log_sign(x: Tensor, p: float = 10.0) -> Tensor:
    r"""The paper's two-feature encoding of gradient magnitude and sign.

    .. math::
        x \mapsto \begin{cases}
            \left(\frac{\log |x|}{p},\ \operatorname{sign}(x)\right) & |x| \ge e^{-p} \\
            \left(-1,\ e^{p} x\right) & \text{otherwise}
        \end{cases}

    computed in the equivalent clamped form
    :math:`\left(\log\max(|x|, e^{-p}) / p,\ \operatorname{clamp}(e^{p} x, -1, 1)\right)`,
    which has no ``log 0`` and no overflow to ``inf``/``nan`` for finite ``x``.

    Args:
        x (Tensor): flat gradient, shape ``[N]``.
        p (float, optional): the constant :math:`p > 0` (default: 10.0).

    Returns:
        Tensor of shape ``[N, 2]``.

    Example:
        >>> log_sign(torch.tensor([0.0, 1e-8, -1.0]), p=10.0)
        tensor([[-1.0000,  0.0000],
                [-1.0000,  0.0002],
                [ 0.0000, -1.0000]])
    """
    if p <= 0:
        raise ValueError(f"Invalid log_sign constant p: {p}; it must be positive")
    magnitude = x.abs().clamp(min=math.exp(-p)).log() / p
    direction = (x * math.exp(p)).clamp(-1.0, 1.0)
    return torch.stack((magnitude, direction), dim=-1)


def identity(x: Tensor, p: float = 10.0) -> Tensor:
    """The raw gradient as a single feature, shape ``[N, 1]`` (``p`` is ignored)."""
    return x.unsqueeze(-1)


MOMENT_DECAY, ADAM_EPSILON = 0.95, 1e-12
r"""RNNprop's :math:`\beta_1 = \beta_2`, and :math:`\epsilon`, of :func:`adam_normalised`."""


def adam_normalised(
    x: Tensor, moments: Tensor, beta: float = MOMENT_DECAY, eps: float = ADAM_EPSILON
) -> tuple[Tensor, Tensor]:
    r"""RNNprop's inputs (Lv et al., 2017): the gradient and its momentum, normalised as Adam normalises.

    With ``moments = (m, v, w)``, exponential averages of :math:`g`, :math:`g^2` and 1 (so :math:`w = 1 - \beta^t`
    is Adam's bias correction, kept per coordinate),

    .. math::
        m \leftarrow \beta m + (1 - \beta) g, \quad v \leftarrow \beta v + (1 - \beta) g^2, \quad
        w \leftarrow \beta w + (1 - \beta), \qquad
        x \mapsto \left(\frac{g}{\sqrt{\hat v + \epsilon^2}},\ \frac{\hat m}{\sqrt{\hat v + \epsilon^2}}\right),
        \quad \hat m = m / w,\ \hat v = v / w.

    The features are invariant to the gradient's scale (down to :math:`\epsilon`) and bounded by
    :math:`1 / \sqrt{1 - \beta}`, so a network fed them behaves alike on tiny and on large gradients.

    Args:
        x (Tensor): flat gradient, shape ``[N]``.
        moments (Tensor): ``[3, N]``, zeros before the first step (:meth:`CoordinatewiseLSTM.initial_moments`).
        beta (float, optional): decay of the averages (default: 0.95).
        eps (float, optional): :math:`\epsilon` (default: 1e-12).

    Returns:
        ``(features [N, 2], new moments [3, N])``; ``moments`` is not modified.

    Example:
        >>> features, moments = adam_normalised(torch.tensor([1e-9, -3.0]), torch.zeros(3, 2))
        >>> features
        tensor([[ 1.0000,  1.0000],
                [-1.0000, -1.0000]])
    """
    m, v, w = moments.unbind(0)
    m = beta * m + (1 - beta) * x
    v = beta * v + (1 - beta) * x * x
    w = beta * w + (1 - beta)
    inverse_rms = (v / w + eps * eps).rsqrt()
    return torch.stack((x * inverse_rms, m / w * inverse_rms), dim=-1), torch.stack((m, v, w))


LONG_MOMENT_DECAY = 0.999
r"""The long time scale of :func:`adam_two_timescales`: Adam's :math:`\beta_2`."""
LOG_RMS_RATIO_BOUND = 5.0
"""Where :func:`adam_two_timescales`'s third feature is clamped: a recent RMS e⁵ ≈ 150× below the long-term one
(above, it cannot exceed ½ log((1 − β) / (1 − β_ℓ)) ≈ 1.96 unless g² overflows)."""


def adam_two_timescales(x: Tensor, moments: Tensor, beta: float = MOMENT_DECAY, long_beta: float = LONG_MOMENT_DECAY,
                        eps: float = ADAM_EPSILON) -> tuple[Tensor, Tensor]:
    r""":func:`adam_normalised`'s two features and how the gradient's recent RMS compares with its long-term one.

    With ``moments = (m, v, w, V, W)``, the first three as :func:`adam_normalised`'s and :math:`V`, :math:`W` the
    averages of :math:`g^2` and 1 with the long decay :math:`\beta_\ell` (Adam's :math:`\beta_2`),

    .. math::
        x \mapsto \left(\frac{g}{\sqrt{\hat v + \epsilon^2}},\ \frac{\hat m}{\sqrt{\hat v + \epsilon^2}},\
        \operatorname{clamp}\left(\tfrac12 \log\frac{\hat v + \epsilon^2}{\hat V + \epsilon^2},\ -5,\ 5\right)\right),
        \quad \hat V = V / W.

    The third feature is still invariant to the gradient's scale, but says how far the gradients have shrunk:
    Adam's step :math:`\hat m / \sqrt{\hat V}` is the second feature times its exponential, which anneals
    Adam's steps as the loss falls and which the two scale-free features alone cannot express.

    Args:
        x (Tensor): flat gradient, shape ``[N]``.
        moments (Tensor): ``[5, N]``, zeros before the first step (:meth:`CoordinatewiseLSTM.initial_moments`).
        beta, long_beta (float, optional): the two decays (default: 0.95 and 0.999).
        eps (float, optional): :math:`\epsilon` (default: 1e-12).

    Returns:
        ``(features [N, 3], new moments [5, N])``; ``moments`` is not modified.
    """
    features, short = adam_normalised(x, moments[:3], beta, eps)
    v_long, w_long = moments[3:].unbind(0)
    v_long = long_beta * v_long + (1 - long_beta) * x * x
    w_long = long_beta * w_long + (1 - long_beta)
    v_hat = short[1] / short[2]
    ratio = 0.5 * ((v_hat + eps * eps) / (v_long / w_long + eps * eps)).log()
    ratio = ratio.nan_to_num(0.0).clamp(-LOG_RMS_RATIO_BOUND, LOG_RMS_RATIO_BOUND)  # 0 where both g² overflowed
    features = torch.cat((features, ratio.unsqueeze(-1)), dim=-1)
    return features, torch.cat((short, torch.stack((v_long, w_long))))


class Encoding(NamedTuple):
    """A gradient encoding: ``function(x, p) -> features`` or, if it keeps ``moments`` (rows per coordinate),
    ``function(x, moments) -> (features, moments)``; ``features`` is F."""

    function: Callable
    features: int
    moments: int = 0

    @property
    def stateful(self) -> bool:
        """Whether the encoding keeps per-coordinate moments."""
        return self.moments > 0


PREPROCESSINGS: dict[str, Encoding] = {
    "log_sign": Encoding(log_sign, 2),
    "none": Encoding(identity, 1),
    "adam": Encoding(adam_normalised, 2, moments=3),
    "adam_two_timescales": Encoding(adam_two_timescales, 3, moments=5),
}
"""Encoding name -> :class:`Encoding`."""
NOMINAL_ENCODINGS = ("adam", "adam_two_timescales")
r"""The encodings whose second feature is Adam's :math:`\hat m / \sqrt{\hat v}`, which a nominal term can step along."""
