"""How a loss curve is scored: the metrics that evaluation reports, validation selects on and meta-objectives
aim at, in one place."""

from __future__ import annotations

from typing import Callable

FINAL_STEPS = 10
"""The ``final`` metric's window: the last steps, whose mean loss it is."""

METRICS: dict[str, Callable[[list[float]], float]] = {
    "final": lambda losses: sum(losses[-FINAL_STEPS:]) / len(losses[-FINAL_STEPS:]),
    "sum": sum,
}
"""``final``: mean loss over the last :data:`FINAL_STEPS` steps; ``sum``: sum of the losses over all steps."""
