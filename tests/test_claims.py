"""Every bundled checkpoint's claim against tuned baselines, on a subset of the problems its card reports: the
learned optimizer's final loss (mean of the last 10 steps) is below every tuned baseline's, on the panel where its
card says it wins. The claims are fixed here and stated word for word in each model card; they are not moved when a
checkpoint changes (a checkpoint that misses one does not ship)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from learned_optim import pretrained
from learned_optim.meta.evaluation import LR_GRID, compare
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import SUITES, suite_panels

from conftest import art_root, mnist_root


class Claim(NamedTuple):
    suite: str  # a key of SUITES, or "quadratic" (the main job's one panel)
    panel: str
    problems: int  # the first ones of the card's test problems
    metrics: tuple[str, ...]  # where the LSTM beats every tuned baseline
    tuned_in: str | None = None  # the card's evaluation (evaluate's JSON): the baselines run at the rates it tuned

    def sentence(self) -> str:
        metrics = " and ".join({"final": "final loss", "sum": "sum of losses"}[m] for m in self.metrics)
        return (f"Checked in CI (`pytest -m slow tests/test_claims.py`): on the first {self.problems} test problems of "
                f"`{self.panel}`{f' (suite `{self.suite}`)' if self.suite != 'quadratic' else ''}, its {metrics} "
                "below every tuned baseline's.")


CLAIMS = {
    "l2l-quadratic": Claim("quadratic", "quadratic", 20, ("final", "sum")),
    "l2l-mnist": Claim("mnist-paper", "mnist-40-sigmoid-100", 10, ("final", "sum")),
    "l2o-generalist": Claim("generalist", "mnist-2x20-sigmoid-100", 10, ("final",)),
    "l2o-generalist-2": Claim("generalist", "mnist-2x20-sigmoid-100", 10, ("final",)),
    "l2o-generalist-3": Claim("generalist", "mnist-2x20-sigmoid-100", 10, ("final",)),
    "l2l-art": Claim("neural-art", "art-starry-night-64", 8, ("final",), "docs/art/art-starry-night-64.json"),
}
"""Each claim's baselines are tuned again as its card's evaluation tuned them, but neural art's: tuning there is 64
runs of VGG-16, most of CI's time, so its baselines run at the rates the card's evaluation tuned (on these problems,
afresh)."""


TUNED_BASELINES: dict[Claim, list] = {}
"""The tuned baselines of each claim's panel and problems, measured once and shared by the checkpoints claiming
there (the generalist line's three)."""


def test_every_bundled_checkpoint_has_a_claim_stated_on_its_card():
    assert set(CLAIMS) == set(pretrained.list_pretrained())
    for name, claim in CLAIMS.items():
        card = (pretrained.resolve(name) / "README.md").read_text()
        assert claim.sentence() in card, f"{name}'s card does not state: {claim.sentence()}"


def recorded_rates(evaluation: str, spec: dict, steps: int) -> dict[str, dict[str, float]]:
    """The learning rates an evaluation of ``spec``'s test problems tuned, per baseline and metric."""
    record = json.loads((Path(__file__).parents[1] / evaluation).read_text())
    assert (record["task"], record["steps"], record["split"]) == (spec, steps, "test"), f"{evaluation} is another panel"
    return {result["name"]: result["learning_rates"] for result in record["results"] if result["name"] != "LSTM"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_bundled_checkpoint_beats_tuned_baselines_where_its_card_says(name):
    claim = CLAIMS[name]
    if claim.suite == "quadratic":
        family, spec, steps = "quadratic", {"name": "quadratic", "num_functions": 1}, 100
    else:
        family = SUITES[claim.suite][0]
        spec, steps, _, _ = suite_panels(claim.suite, DEFAULTS[family]["task"])[claim.panel]
    tuned_rates = None if claim.tuned_in is None else recorded_rates(claim.tuned_in, spec, steps)
    if family == "art":
        spec = {**spec, "root": str(art_root())}
    elif family == "mnist":
        spec = {**spec, "root": mnist_root()}
    protocol = DEFAULTS[family]["evaluation"]
    summaries = compare(pretrained.load(name), make_task(spec, "test"), steps, claim.problems,
                        protocol["tuning_problems"],
                        tuning_task=make_task(spec, protocol.get("tuning_split", "test")),
                        lr_grid=protocol.get("lr_grid", LR_GRID), measured_baselines=TUNED_BASELINES.get(claim),
                        tuned_rates=tuned_rates)
    TUNED_BASELINES.setdefault(claim, summaries[1:])
    metrics = {summary.name: summary.metrics for summary in summaries}
    for metric in claim.metrics:
        best = min((m[metric], baseline) for baseline, m in metrics.items() if baseline != "LSTM")
        assert metrics["LSTM"][metric] < best[0], (metric, metrics["LSTM"][metric], best)
