"""Task families with a sampled architecture per problem (mnist-mlps, mnist-convnets, user-models)."""

import json
import re

import pytest
import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM
from learned_optim.meta.tasks.families import (HELD_OUT_CONVNET, HELD_OUT_MLPS, MLPConfig, MNISTConvNetFamily,
                                              MNISTMLPFamily)
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.suites import run_suite, suite_panels
from learned_optim.meta.tasks import convnet, seeded
from learned_optim.meta.train import validation_losses
from learned_optim.meta.truncated import Recipe, train_episode

from conftest import mnist_root, random_network


def test_mlp_family_draws_reproducible_varied_configs_and_never_a_held_out_one():
    family = MNISTMLPFamily(root=mnist_root())
    configs = [family.config(seeded(seed)) for seed in range(200)]
    assert configs == [family.config(seeded(seed)) for seed in range(200)]
    assert {len(c.hidden_sizes) for c in configs} == {1, 2, 3}
    assert {c.activation for c in configs} == {"sigmoid", "tanh", "relu", "gelu"}
    assert {c.init for c in configs} == {"paper", "pytorch"} and {c.batch_size for c in configs} == {64, 128, 256}
    assert all(16 <= width <= 128 for c in configs for width in c.hidden_sizes)
    narrow = MNISTMLPFamily(widths=(20, 20), depths=(1, 1), activations=("sigmoid", "tanh"), inits=("paper",),
                            batch_sizes=(128,), root=mnist_root())  # half its draws are the paper's panel
    assert {narrow.config(seeded(seed)) for seed in range(30)} == {MLPConfig((20,), "tanh", "paper", 128)}
    assert MLPConfig((20,), "sigmoid", "paper", 128) in HELD_OUT_MLPS


def test_problems_build_their_drawn_architecture_and_a_meta_batch_shares_one():
    family = MNISTMLPFamily(root=mnist_root())
    config = family.config(seeded(3))
    problem = family.sample(seeded(3))
    shapes = [tuple(p.shape) for name, p in problem.params.items() if name.endswith("weight")]
    assert shapes == [(out, inp) for inp, out in zip((784, *config.hidden_sizes), (*config.hidden_sizes, 10))]
    batch = family.sample_many([seeded(3), seeded(4), seeded(5)])
    assert all(p.shape[0] == 3 for p in batch.params.values())
    losses = batch.loss(batch.params, 0)
    assert losses.shape == (3,) and torch.isfinite(losses).all()


def test_convnet_family_meta_trains_under_vmap_with_batch_norm():
    family = make_task({"name": "mnist-convnets", "root": mnist_root()})
    assert isinstance(family, MNISTConvNetFamily)
    network = CoordinatewiseLSTM()
    meta_optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in network.parameters()]
    train_episode(network, meta_optimizer, family.sample_many([seeded(0), seeded(1)]), Recipe(horizon=4, unroll=2))
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
    curves = validation_losses(network, family, range(3), horizon=3)
    assert len(curves) == 3 and all(len(curve) == 3 for curve in curves)


def test_convnet_builder_checks_depth_and_can_drop_batch_norm():
    with pytest.raises(ValueError, match="1 to 3"):
        convnet(num_convs=4)
    assert convnet(channels=8, num_convs=2, kernel_size=3)(torch.rand(4, 784)).shape == (4, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in convnet(batch_norm=False))


def test_mlp_family_rejects_unknown_options():
    with pytest.raises(ValueError, match="swish"):
        MNISTMLPFamily(activations=("swish",))


def test_mixture_draws_components_by_weight_and_a_meta_batch_shares_one():
    from learned_optim.meta.tasks.families import MixtureTask
    from learned_optim.meta.tasks import QuadraticTask, SimpleTask

    mixture = MixtureTask([(SimpleTask(), 1.0), (QuadraticTask(), 3.0)])
    picks = [mixture.config(seeded(seed)) for seed in range(400)]
    assert picks == [mixture.config(seeded(seed)) for seed in range(400)]
    assert 0.68 < sum(picks) / len(picks) < 0.82  # 3 / 4 quadratics
    quadratic_seed = picks.index(1)
    batch = mixture.sample_many([seeded(quadratic_seed), seeded(1000), seeded(1001)])
    assert batch.params["theta"].shape == (3, 1, 10)  # 3 quadratics, not a mix
    with pytest.raises(ValueError, match="positive weights"):
        MixtureTask([(SimpleTask(), 0.0)])


def test_mixture_specs_are_built_and_checked_by_the_registry(tmp_path):
    from learned_optim.meta.cli import main
    from learned_optim.meta.tasks.families import MixtureTask

    mixture = make_task({"name": "mixture", "components": [{"name": "simple", "weight": 1},
                                                           {"name": "quadratic", "num_functions": 2, "weight": 2}]})
    assert isinstance(mixture, MixtureTask) and mixture.components[1].num_functions == 2
    default = make_task({"name": "mixture"})  # the registry's components: mnist-mlps 0.7, mnist-convnets 0.3
    assert [type(task) for task in default.components] == [MNISTMLPFamily, MNISTConvNetFamily]
    with pytest.raises(ValueError, match="other than mixture"):
        make_task({"name": "mixture", "components": [{"name": "mixture", "weight": 1}]})
    with pytest.raises(ValueError, match="does not take options"):
        make_task({"name": "simple", "components": []})
    with pytest.raises(SystemExit, match="NAME:WEIGHT"):
        main(["train", str(tmp_path / "run"), "--task", "mixture", "--mixture", "simple"])


def test_convnet_family_never_draws_the_papers_convnet():
    narrow = MNISTConvNetFamily(channels=(16, 16), batch_sizes=(128,), root=mnist_root())  # 1 in 12 draws would be
    configs = {narrow.config(seeded(seed)) for seed in range(100)}
    assert len(configs) == 11 and HELD_OUT_CONVNET not in configs


def test_generalist_suite_runs_held_out_tasks_and_summarises_against_the_best_baseline(tmp_path, capsys, monkeypatch):
    from learned_optim.meta.tasks.mnist import ENV_VAR

    monkeypatch.setenv(ENV_VAR, mnist_root())  # the ConvNet panel is a whole spec: it reads MNIST from the default root
    panels = suite_panels("generalist", {**DEFAULTS["mnist"]["task"], "root": mnist_root()})
    assert panels["mnist-convnet-100"].spec == {"name": "mnist-convnet"}
    assert panels["mnist-20-sigmoid-10000"].steps == 10_000
    for panel in panels.values():
        if panel.spec["name"] == "mnist":
            assert MLPConfig(tuple(panel.spec["hidden_sizes"]), panel.spec["activation"], "paper",
                             panel.spec.get("batch_size", 128)) in HELD_OUT_MLPS
    assert panels["text-lm-300"].spec == {"name": "text-lm"}  # HELD_OUT_LANGUAGE_MODEL
    convnet = make_task({"name": "mnist-convnet", "root": mnist_root()}, "test").sample(seeded(0))
    assert sum(p.numel() for p in convnet.params.values()) == 18_314
    tiny = {name: panel._replace(steps=3, protocol={**panel.protocol, "problems": 2, "tuning_problems": 1,
                                                    "lr_grid": [0.01, 0.1]})
            for name, panel in panels.items() if name in ("mnist-20-relu-100", "mnist-convnet-100", "text-lm-300")}
    run_suite(random_network(), tiny, {"problems": 3, "tuning_problems": 3}, tmp_path, "the command")
    readme = (tmp_path / "README.md").read_text()
    assert ("| panel | LSTM final | best tuned baseline final | LSTM / best | LSTM below best on | "
            "LSTM ends below its start |") in readme
    rows = [line for line in readme.splitlines() if line.startswith("| MNIST MLP") or line.startswith("| The paper")]
    assert len(rows) == 2 and all(re.search(r"\| [0-2] / 2 \| [0-2] / 2 \|$", row) for row in rows)
    assert "2 problems; baselines' learning rates tuned on 1 other over" in readme
    assert (f"- {panels['mnist-20-relu-100'].title}; {panels['mnist-convnet-100'].title}: minibatches from the 10,000 "
            "MNIST test images") in readme  # each panel's data named
    assert (f"- {panels['text-lm-300'].title}: windows of the test text (from 90% to 100% of the bundled Python "
            "standard-library sources), which meta-training and validation never see.") in readme


def test_a_suite_on_the_validation_split_draws_other_problems_and_is_never_mixed_with_the_test_one(tmp_path):
    panel = suite_panels("generalist", {**DEFAULTS["mnist"]["task"], "root": mnist_root()})["mnist-20-relu-100"]
    tiny = {"mnist-20-relu-100": panel._replace(steps=3, protocol={"problems": 2, "tuning_problems": 1,
                                                                   "lr_grid": [0.1]})}
    run_suite(random_network(), tiny, {}, tmp_path / "test", "the command")
    run_suite(random_network(), tiny, {"split": "validation"}, tmp_path / "validation", "the command")
    test, validation = (json.loads((tmp_path / split / "mnist-20-relu-100.json").read_text())
                        for split in ("test", "validation"))
    assert (test["split"], validation["split"], validation["tuning_split"]) == ("test", "validation", "validation")
    assert test["results"][0]["mean_curve"] != validation["results"][0]["mean_curve"]  # other minibatches
    readme = (tmp_path / "validation" / "README.md").read_text()
    assert "MNIST validation images" in readme and "| validation-set loss |" in readme
    with pytest.raises(ValueError, match="'split': \\('test', 'validation'\\)"):
        run_suite(random_network(), tiny, {"split": "validation"}, tmp_path / "mixed", "", tmp_path / "test")


def test_mlp_family_options_come_from_the_spec_and_depth_zero_is_logistic_regression():
    family = make_task({"name": "mnist-mlps", "depths": [0, 1], "batch_sizes": [16, 512], "root": mnist_root()})
    configs = [family.config(seeded(seed)) for seed in range(100)]
    assert {len(c.hidden_sizes) for c in configs} == {0, 1} and {c.batch_size for c in configs} == {16, 512}
    regression = next(seed for seed, c in enumerate(configs) if not c.hidden_sizes)
    problem = family.sample(seeded(regression))
    assert {name: tuple(p.shape) for name, p in problem.params.items()} == {"0.weight": (10, 784), "0.bias": (10,)}
    assert all(MLPConfig((), activation, "paper", 128) in HELD_OUT_MLPS for activation in ("sigmoid", "relu"))


def test_the_user_models_mixture_draws_mlps_convnets_and_language_models():
    mixture = make_task({"name": "user-models"})
    kinds = {type(mixture._task_for(seeded(seed))).__name__ for seed in range(60)}
    assert kinds == {"MNISTMLPFamily", "MNISTConvNetFamily", "TextLMFamily"}
