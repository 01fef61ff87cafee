r"""Schedules of a meta-training run: the meta learning rate and the horizon curriculum.

Both are functions of what the run has seen (the episode index, the validation losses), kept in the
run's checkpoint, so a resumed run follows the same schedule as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

META_LR_SCHEDULES = ("constant", "cosine")


def meta_lr(base: float, episode: int, episodes: int, schedule: str = "constant", warmup: int = 0) -> float:
    r"""The meta learning rate of ``episode`` (0-based) out of ``episodes``.

    .. math::
        \eta_e = \eta \cdot \min\!\left(1, \tfrac{e + 1}{w}\right) \cdot
        \begin{cases} 1 & \text{constant} \\ 0.1 + 0.45\,(1 + \cos(\pi e / E)) & \text{cosine} \end{cases}

    a linear warm-up over :math:`w` episodes, then constant or a cosine decay to a tenth of :math:`\eta`.
    """
    if schedule not in META_LR_SCHEDULES:
        raise ValueError(f"Invalid meta-lr schedule: {schedule!r}; use one of {list(META_LR_SCHEDULES)}")
    ramp = min(1.0, (episode + 1) / warmup) if warmup > 0 else 1.0
    decay = 1.0 if schedule == "constant" else 0.1 + 0.45 * (1 + math.cos(math.pi * episode / episodes))
    return base * ramp * decay


@dataclass
class HorizonCurriculum:
    """Stages of increasing horizon (Chen et al., 2020): train at ``stages[s]``, validate at the next stage's
    horizon, and move on once validation has not improved for ``patience`` validations in a row.

    Args:
        stages (list[int]): horizons, increasing (e.g. ``[100, 200, 500, 1000]``); one stage is no curriculum.
        patience (int): validations without improvement before moving on (default: 2).
    """

    stages: list[int]
    patience: int = 2
    stage: int = 0
    best: float = math.inf
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.stages or any(b <= a for a, b in zip(self.stages, self.stages[1:])) or self.stages[0] < 1:
            raise ValueError(f"Invalid curriculum stages: {self.stages}; give positive, increasing horizons")
        if self.patience < 1:
            raise ValueError(f"Invalid curriculum patience: {self.patience}; it must be positive")

    @property
    def horizon(self) -> int:
        """The horizon of the training episodes now."""
        return self.stages[self.stage]

    @property
    def validation_horizon(self) -> int:
        """The horizon validation runs at: the next stage's (the last stage's at the end)."""
        return self.stages[min(self.stage + 1, len(self.stages) - 1)]

    def observe(self, episode: int, validation_loss: float) -> bool:
        """Record a validation; returns True when this moves the curriculum to its next stage."""
        if validation_loss < self.best:
            self.best, self.stale = validation_loss, 0
            return False
        self.stale += 1
        if self.stale < self.patience or self.stage == len(self.stages) - 1:
            return False
        self.stage += 1
        self.best, self.stale = math.inf, 0
        self.history.append({"episode": episode, "stage": self.stage, "horizon": self.horizon})
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "best": self.best, "stale": self.stale, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage, self.best, self.stale = state["stage"], state["best"], state["stale"]
        self.history = list(state["history"])
