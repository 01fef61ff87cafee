"""Every bundled checkpoint's claim against tuned baselines, on a subset of the problems its card reports: the
learned optimizer's final loss (mean of the last 10 steps) is below every tuned baseline's, on the panel where its
card says it wins. The claims are fixed here and stated word for word in each model card; they are not moved when a
checkpoint changes (a checkpoint that misses one does not ship)."""

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
    "l2l-art": Claim("neural-art", "art-starry-night-64", 8, ("final",)),
}


def test_every_bundled_checkpoint_has_a_claim_stated_on_its_card():
    assert set(CLAIMS) == set(pretrained.list_pretrained())
    for name, claim in CLAIMS.items():
        card = (pretrained.resolve(name) / "README.md").read_text()
        assert claim.sentence() in card, f"{name}'s card does not state: {claim.sentence()}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_bundled_checkpoint_beats_tuned_baselines_where_its_card_says(name):
    claim = CLAIMS[name]
    if claim.suite == "quadratic":
        family, spec, steps = "quadratic", {"name": "quadratic", "num_functions": 1}, 100
    else:
        family = SUITES[claim.suite][0]
        spec, steps, _, _ = suite_panels(claim.suite, DEFAULTS[family]["task"])[claim.panel]
    if family == "art":
        spec = {**spec, "root": str(art_root())}
    elif family == "mnist":
        spec = {**spec, "root": mnist_root()}
    protocol = DEFAULTS[family]["evaluation"]
    summaries = compare(pretrained.load(name), make_task(spec, "test"), steps, claim.problems,
                        protocol["tuning_problems"],
                        tuning_task=make_task(spec, protocol.get("tuning_split", "test")),
                        lr_grid=protocol.get("lr_grid", LR_GRID))
    metrics = {summary.name: summary.metrics for summary in summaries}
    for metric in claim.metrics:
        best = min((m[metric], baseline) for baseline, m in metrics.items() if baseline != "LSTM")
        assert metrics["LSTM"][metric] < best[0], (metric, metrics["LSTM"][metric], best)
