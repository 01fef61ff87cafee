"""Your own learned optimizer in one call (meta.fit) and on the command line: the recipe derived from the horizon,
the wall-clock budget, validation against a tuned baseline, the comparison on test problems."""

import functools
import json

import pytest
import torch
from torch import nn

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta import fit
from learned_optim.meta.cli import main
from learned_optim.meta.evaluation import BASELINES, LR_GRID, run_optimizer
from learned_optim.meta.fitting import horizon_options, parse_duration, run_config
from learned_optim.meta.tasks import ModuleTask, seeded
from learned_optim.meta.train import VALIDATION_SEED, Run, RunConfig, train
from learned_optim.meta.truncated import Recipe


def regression(split):
    """A linear regression whose target differs per split."""
    target = torch.randn(4, 1, generator=torch.Generator().manual_seed({"train": 0, "validation": 1, "test": 2}[split]))

    def sample_batch(generator):
        x = torch.randn(16, 4, generator=generator)
        return x, x @ target

    return ModuleTask(lambda: nn.Linear(4, 1), sample_batch, nn.functional.mse_loss)


@pytest.mark.parametrize("text, seconds", [("90", 90), (90, 90), ("90s", 90), ("10m", 600), ("1.5h", 5400),
                                           (" 2m ", 120), (".5m", 30)])
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1m", "10 minutes", "1d", "m"])
def test_a_bad_duration_names_the_forms_it_takes(text):
    with pytest.raises(ValueError, match="such as 90s, 10m or 1.5h"):
        parse_duration(text)


@pytest.mark.parametrize("horizon, unroll, curriculum", [
    (40, 40, None), (200, 200, None), (300, 150, [150, 300]), (1000, 200, [125, 250, 500, 1000])])
def test_the_unroll_and_curriculum_follow_from_the_horizon(horizon, unroll, curriculum):
    assert horizon_options(horizon) == {"horizon": horizon, "unroll": unroll, "curriculum": curriculum}


def small_config(**overrides) -> RunConfig:
    options = {"task": {"name": "module", "reference": None}, "recipe": Recipe(horizon=6, unroll=6, meta_lr=1e-3),
               "network": {"hidden_size": 4, "num_layers": 1, "preprocessing": "adam", "output_scale": 0.03},
               "episodes": 4, "validate_every": 2, "num_validation": 3, "validation_metric": "final", **overrides}
    return RunConfig(**options)


def test_validation_reports_the_ratio_to_the_baseline_tuned_on_the_same_problems(tmp_path):
    task, validation = regression("train"), regression("validation")
    run = train(small_config(validation_baseline="Adam"), tmp_path / "run", progress=False, task=task,
                validation_task=validation)
    baseline = next(entry for entry in run.log() if entry.get("event") == "baseline")
    problems = [validation.sample(seeded(VALIDATION_SEED + i)) for i in range(3)]  # validation's own problems
    finals = {lr: sum(sum(curve[-10:]) / len(curve[-10:]) for curve in (
        run_optimizer(problem, functools.partial(BASELINES["Adam"], lr=lr), 6).losses for problem in problems)) / 3
        for lr in LR_GRID}
    assert baseline["lr"] == min(finals, key=finals.get)
    assert baseline["validation_final"] == pytest.approx(finals[baseline["lr"]], rel=1e-6)
    validations = [entry for entry in run.log() if "validation_loss" in entry]
    assert len(validations) == 3
    for entry in validations:
        assert entry["baseline_ratio"] == pytest.approx(entry["validation_loss"] / baseline["validation_final"])


def test_a_run_without_a_baseline_tunes_none(tmp_path):
    run = train(small_config(), tmp_path / "run", progress=False, task=regression("train"))
    assert not any(entry.get("event") == "baseline" or "baseline_ratio" in entry for entry in run.log())


@pytest.mark.parametrize("budget_s, episodes", [(1e-3, 2), (1e6, 4)])
def test_a_budget_sizes_the_run_after_its_second_episode_within_the_episodes_given(tmp_path, budget_s, episodes):
    run = train(small_config(budget_s=budget_s), tmp_path / "run", progress=False, task=regression("train"))
    sized = next(entry for entry in run.log() if entry.get("event") == "budget")
    assert sized["episode"] == 2 and sized["episodes"] == episodes
    assert run.config.episodes == episodes and run.summary()["episode"] == episodes
    assert run.summary()["best"]["episode"] <= episodes  # validated at the end of the sized run


def test_a_resumed_budget_run_keeps_its_size(tmp_path):
    folder = tmp_path / "run"
    train(small_config(budget_s=1e-3, episodes=8), folder, progress=False, task=regression("train"))
    assert Run(folder).config.episodes == 2
    run = train(None, folder, resume=True, progress=False, task=regression("train"), episodes=3)
    assert run.summary()["episode"] == 3 and [e for e in run.log() if e.get("event") == "budget"][0]["episodes"] == 2


def test_fit_fine_tunes_and_compares_with_tuned_adam_at_the_horizon_and_twice_it(tmp_path):
    result = fit(regression, tmp_path / "mine", horizon=5, budget=None, episodes=2, num_validation=2, problems=2,
                 progress=False)
    config = result.run.config
    assert config.init == "l2o-generalist-2" and config.recipe.unroll == 5 and config.validation_baseline == "Adam"
    assert config.task == {"name": "module", "reference": f"{__name__}:regression"}
    assert list(result.comparison) == [5, 10]
    for steps, (learned, adam) in result.comparison.items():
        assert learned.name == "LSTM" and adam.name == "Adam" and len(learned.mean_curve) == steps
    table = result.table().splitlines()
    assert len(table) == 4 and table[2].startswith("| 5 |") and table[3].startswith("| 10 |")
    ratio = result.comparison[5][0].metrics["final"] / result.comparison[5][1].metrics["final"]
    assert table[2].endswith(f"| {ratio:.2f} |")
    p = nn.Parameter(torch.ones(3))
    LearnedOptimizer([p], pretrained=result.checkpoint)  # the best network, as a checkpoint folder


def test_fit_fine_tunes_any_checkpoint_with_its_own_config(tmp_path):
    spec = {"name": "module", "reference": f"{__name__}:regression"}
    assert run_config(spec, 100).network == pretrained.load("l2o-generalist-2").config
    result = fit(regression, tmp_path / "from-default", horizon=5, budget=None, episodes=1, num_validation=2,
                 problems=2, progress=False, init=pretrained.DEFAULT_CHECKPOINT)
    assert result.run.config.init == "l2o-generalist-3" and result.network.nominal == 0.003


def test_fit_refuses_a_function_that_returns_no_task(tmp_path):
    with pytest.raises(ValueError, match=r"make_task\('train'\) returned Linear"):
        fit(lambda split: nn.Linear(2, 2), tmp_path / "mine", budget=None)


def test_the_command_line_takes_a_budget_and_derives_the_unroll(tmp_path, capsys):
    path = tmp_path / "tasks.py"
    path.write_text("from test_fitting import regression\n")
    run = tmp_path / "run"
    main(["train", str(run), "--task-module", f"{path}:regression", "--horizon", "6", "--budget", "1s",
          "--num-validation", "2", "--validate-every", "1"])
    config = json.loads((run / "run.json").read_text())
    assert config["recipe"]["unroll"] == 6 and config["budget_s"] == 1.0 and config["validation_baseline"] == "Adam"
    assert config["episodes"] < 1000  # sized by the budget
    assert "tuned Adam's" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "other"), "--task-module", f"{path}:regression", "--budget", "ten minutes"])
    assert "such as 90s, 10m or 1.5h" in capsys.readouterr().err


def test_fit_again_on_its_folder_resumes_without_training_further(tmp_path):
    options = {"horizon": 5, "budget": 1e-3, "num_validation": 2, "problems": 2, "progress": False}
    first = fit(regression, tmp_path / "mine", **options)
    assert first.run.config.episodes == 2
    again = fit(regression, tmp_path / "mine", **options)
    assert again.run.summary()["episode"] == 2 and again.run.config.episodes == 2


def test_fit_refuses_an_unknown_baseline_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"'AdamW'; use one of \['SGD', 'NAG', 'RMSprop', 'Adam'\]"):
        fit(regression, tmp_path / "mine", baseline="AdamW", budget=None)
    assert not (tmp_path / "mine").exists()
