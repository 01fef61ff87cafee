"""The meta-training engine: meta-batches, objectives, estimators, schedules, validation, distribution."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer
from learned_optim.meta.cli import main
from learned_optim.meta.distributed import Distribution
from learned_optim.meta.evaluation import run_optimizer
from learned_optim.meta.imitation import adam_update, imitation_episode
from learned_optim.meta.schedules import HorizonCurriculum, meta_lr
from learned_optim.meta.tasks import ModuleTask, QuadraticTask, seeded, stack_problems
from learned_optim.meta.train import NETWORK_INITS, Run, RunConfig, train, validation_losses
from learned_optim.meta.truncated import BatchLayout, Recipe, Unroller, random_scales

from conftest import mnist_root, random_network, torchrun


def tiny_module_task() -> ModuleTask:
    """A 2-layer sigmoid MLP on a fixed synthetic classification set, minibatches of 16."""
    data = torch.randn(256, 6, generator=seeded(0))
    labels = (data[:, 0] > 0).long() + (data[:, 1] > 0).long()

    def sample_batch(generator):
        index = torch.randint(256, (16,), generator=generator)
        return data[index], labels[index]

    return ModuleTask(lambda: nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3)), sample_batch)


def test_sample_many_stacks_exactly_the_problems_sample_draws():
    task = tiny_module_task()
    batch = task.sample_many([seeded(3), seeded(4)])
    for k, seed in enumerate((3, 4)):
        alone = task.sample(seeded(seed))
        for name, value in alone.params.items():
            assert torch.equal(batch.params[name][k], value)
        for step in (0, 5):
            torch.testing.assert_close(batch.loss(batch.params, step)[k], alone.loss(alone.params, step))


@pytest.mark.parametrize("task", [tiny_module_task(), QuadraticTask(dim=3, num_functions=2)],
                         ids=["module", "quadratic"])
def test_a_meta_batch_runs_each_problem_as_if_alone_and_averages_their_meta_gradients(task, network):
    generators = lambda: [seeded(10), seeded(11), seeded(12)]  # noqa: E731
    batch = task.sample_many(generators())
    meta_losses, losses = Unroller(network, batch, objective="log").unroll(6)
    (batch_grad,) = torch.autograd.grad(meta_losses.mean(), network.head.weight)
    alone_grads = []
    for k, generator in enumerate(generators()):
        alone_meta, alone_losses = Unroller(network, task.sample(generator), objective="log").unroll(6)
        torch.testing.assert_close(losses[:, k], alone_losses[:, 0])
        alone_grads.append(torch.autograd.grad(alone_meta.sum(), network.head.weight)[0])
    torch.testing.assert_close(batch_grad, torch.stack(alone_grads).mean(0))


def test_batch_layout_is_problem_major_and_round_trips():
    params = {"w": torch.arange(12.0).view(2, 3, 2), "b": torch.arange(4.0).view(2, 2) + 100}
    layout = BatchLayout(params)
    flat = layout.flatten(params)
    assert layout.per_problem(flat)[1].tolist() == [6, 7, 8, 9, 10, 11, 102, 103]
    assert all(torch.equal(layout.unflatten(flat)[name], params[name]) for name in params)


def test_random_scaling_per_tensor_gives_each_tensor_of_each_problem_one_scale():
    """Per tensor (a layer's weights scaled together): constant within a tensor, different between tensors and
    problems, the same draws on every call."""
    params = {"w": torch.zeros(2, 3, 4), "b": torch.zeros(2, 5)}  # two problems
    layout = BatchLayout(params)
    scale = random_scales(layout, 3.0, [seeded(1), seeded(2)], per="tensor")
    assert torch.equal(scale, random_scales(layout, 3.0, [seeded(1), seeded(2)], per="tensor"))
    per_problem = layout.per_problem(scale)
    for k in range(2):
        w, b = per_problem[k, :12], per_problem[k, 12:]
        assert (w == w[0]).all() and (b == b[0]).all() and w[0] != b[0]
    assert per_problem[0, 0] != per_problem[1, 0]
    assert scale.min() >= torch.exp(torch.tensor(-3.0)) and scale.max() <= torch.exp(torch.tensor(3.0))
    with pytest.raises(ValueError, match="Invalid random_scale_per: 'layer'"):
        Recipe(random_scale_per="layer")


def test_random_scaling_reparameterises_each_coordinate():
    problem = QuadraticTask(dim=4).sample(seeded(0))
    batch = stack_problems([problem])
    scale = random_scales(BatchLayout(batch.params), 3.0, [seeded(1)])
    assert torch.equal(scale, random_scales(BatchLayout(batch.params), 3.0, [seeded(1)]))
    assert scale.min() >= torch.exp(torch.tensor(-3.0)) and scale.max() <= torch.exp(torch.tensor(3.0))
    assert random_scales(BatchLayout(batch.params), 0.0, [seeded(1)]) is None
    unroller = Unroller(random_network(), batch, scale=scale)
    torch.testing.assert_close(unroller.theta, problem.params["theta"].reshape(-1))  # the same starting point
    theta = problem.params["theta"].clone().requires_grad_()
    (grad,) = torch.autograd.grad(problem.loss({"theta": theta}, 0), theta)
    torch.testing.assert_close(unroller.grad, scale * grad.reshape(-1))  # the rule sees c * grad


def test_every_update_of_an_unroll_gets_a_meta_gradient(network):
    """The meta-loss holds the loss after each update, the last one included (the authors' T+1 terms)."""
    unroller = Unroller(network, QuadraticTask(dim=3).sample(seeded(0)))
    meta_loss, _ = unroller.unroll(1)  # one update: only the loss after it can train it
    (grad,) = torch.autograd.grad(meta_loss.sum(), network.head.bias)
    assert grad.abs().item() > 0


def test_sonnet_init_sets_the_forget_bias_to_one_and_the_output_bias_to_zero():
    network = NETWORK_INITS["sonnet"](CoordinatewiseLSTM())
    for cell in network.cells:
        bias = cell.bias_ih + cell.bias_hh
        assert bias[20:40].eq(1).all() and bias[:20].eq(0).all() and bias[40:].eq(0).all()
    assert network.head.bias.item() == 0.0


def test_adam_update_follows_torch_adam():
    problem = QuadraticTask(dim=5).sample(seeded(0))
    reference = run_optimizer(problem, lambda params: torch.optim.Adam(params, lr=0.05), 8).losses
    theta = problem.params["theta"].clone()
    moments = (torch.zeros_like(theta), torch.zeros_like(theta))
    losses = []
    for step in range(1, 9):
        theta.requires_grad_()
        loss = problem.loss({"theta": theta}, step - 1)
        losses.append(loss.item())
        (grad,) = torch.autograd.grad(loss, theta)
        update, moments = adam_update(grad, moments, step, 0.05)
        theta = theta.detach() + update
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference))


def test_imitation_episodes_teach_the_network_adams_updates():
    torch.manual_seed(0)
    network = NETWORK_INITS["sonnet"](CoordinatewiseLSTM())
    meta_optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    task, recipe = QuadraticTask(dim=10, num_functions=4), Recipe(horizon=20, unroll=10, imitation_lr=0.1)
    errors = [imitation_episode(network, meta_optimizer, task.sample_many([seeded(e)]), recipe)["meta_loss"]
              for e in range(60)]
    assert sum(errors[-5:]) / 5 < 0.5 * sum(errors[:5]) / 5


def test_meta_lr_warms_up_then_decays():
    assert [meta_lr(1.0, e, 100, "constant", warmup=4) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert meta_lr(1.0, 0, 100, "cosine") == pytest.approx(1.0)
    assert meta_lr(1.0, 100, 100, "cosine") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="Invalid meta-lr schedule"):
        meta_lr(1.0, 0, 10, "linear")


def test_horizon_curriculum_moves_on_when_validation_stops_improving():
    curriculum = HorizonCurriculum([100, 200, 500], patience=2)
    assert (curriculum.horizon, curriculum.validation_horizon) == (100, 200)
    assert [curriculum.observe(e, loss) for e, loss in enumerate([1.0, 0.9, 0.95, 0.91])] == [False] * 3 + [True]
    assert (curriculum.horizon, curriculum.validation_horizon) == (200, 500)
    copy = HorizonCurriculum([100, 200, 500], patience=2)
    copy.load_state_dict(curriculum.state_dict())
    assert copy == curriculum
    for loss in [0.8, 0.9, 0.9, 0.9, 0.9]:
        curriculum.observe(9, loss)
    assert curriculum.horizon == 500 and curriculum.validation_horizon == 500  # the last stage stays
    with pytest.raises(ValueError, match="increasing"):
        HorizonCurriculum([200, 100])
    whole_episode = Recipe(horizon=100, unroll=100, objective="log_final")
    with pytest.raises(ValueError, match=r"unroll 100 < horizon 200"):  # each stage's recipe, when the run starts
        RunConfig(recipe=whole_episode, curriculum=[100, 200])


def test_validation_uses_the_same_problems_and_matches_learned_optimizer(network):
    task = QuadraticTask(dim=4)
    first = validation_losses(network, task, range(3), horizon=12)
    assert first == validation_losses(network, task, range(3), horizon=12)  # common random numbers
    from learned_optim.meta.train import VALIDATION_SEED

    through_optimizer = run_optimizer(task.sample(seeded(VALIDATION_SEED + 2)),
                                      lambda params: LearnedOptimizer(params, network), 12).losses
    torch.testing.assert_close(torch.tensor(first[2]), torch.tensor(through_optimizer))


def test_distribution_shards_cover_every_problem_once():
    shards = [list(Distribution(rank, 3).shard(8)) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6, 7]]


ENGINE = ["--task", "quadratic", "--num-functions", "2", "--episodes", "4", "--horizon", "10", "--unroll", "5",
          "--validate-every", "2", "--num-validation", "3", "--meta-batch", "3", "--random-scale", "1",
          "--imitation", "0.3", "--imitation-lr", "0.1", "--network-init", "sonnet", "--objective", "log_ratio",
          "--meta-lr-warmup", "2", "--curriculum", "10", "20", "--curriculum-patience", "1"]


def test_every_technique_is_recorded_in_run_json_and_logged(tmp_path):
    main(["train", str(tmp_path / "run"), *ENGINE])
    config = Run(tmp_path / "run").config
    assert (config.recipe.meta_batch, config.recipe.random_scale, config.recipe.imitation) == (3, 1.0, 0.3)
    assert (config.network_init, config.curriculum, config.meta_lr_warmup) == ("sonnet", [10, 20], 2)
    log = Run(tmp_path / "run").log()
    validations = [e for e in log if "validation_loss" in e]
    assert all({"validation_mean", "validation_final", "validation_horizon"} <= set(e) for e in validations)
    assert {e["estimator"] for e in log if "estimator" in e} <= {"bptt", "imitation"}


def test_two_torchrun_processes_give_the_single_process_weights_and_resume(tmp_path):
    main(["train", str(tmp_path / "one"), *ENGINE])
    torchrun(["train", str(tmp_path / "two"), *ENGINE, "--episodes", "3"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best", "checkpoint.pt", "log.jsonl", "run.json"]
    config = json.loads((tmp_path / "two" / "run.json").read_text())
    assert config["episodes"] == 3
    torchrun(["train", str(tmp_path / "two"), "--resume", "--episodes", "4"])
    one, two = Run(tmp_path / "one").checkpoint(), Run(tmp_path / "two").checkpoint()
    for name, weight in one["network"].items():
        torch.testing.assert_close(two["network"][name], weight, rtol=1e-4, atol=1e-6)
    starts = [e for e in Run(tmp_path / "two").log() if e.get("event") == "start"]
    assert len(starts) == 2 and all("2 processes" in e["hardware"] for e in starts)
    episodes = [e["episode"] for e in Run(tmp_path / "two").log() if "meta_loss" in e]
    assert episodes == [1, 2, 3, 4]  # rank 0 alone wrote the log


def test_a_meta_batch_smaller_than_the_process_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="meta_batch 1 is smaller than the 2 processes"):
        train(RunConfig(), tmp_path / "run", distribution=Distribution(0, 2))
    assert not (tmp_path / "run").exists()


def test_each_task_family_has_its_training_defaults_and_options_override_them():
    from learned_optim.meta.cli import build_parser, run_config

    mnist = run_config(build_parser().parse_args(["train", "RUN", "--task", "mnist", "--meta-lr", "3e-4"]))
    assert (mnist.recipe.objective, mnist.recipe.meta_lr, mnist.network_init) == ("log", 3e-4, "sonnet")
    assert (mnist.meta_lr_warmup, mnist.num_validation, mnist.validation_metric) == (20, 50, "final")
    quadratic = run_config(build_parser().parse_args(["train", "RUN"]))
    assert quadratic.recipe == Recipe() and quadratic.network_init == "pytorch"  # the paper's


def test_a_run_whose_validation_never_moves_warns_with_the_likely_causes(tmp_path, monkeypatch):
    import learned_optim.meta.train as training

    monkeypatch.setattr(training, "STALL_EPISODES", 2)
    config = RunConfig(task={"name": "quadratic", "num_functions": 2}, recipe=Recipe(horizon=4, unroll=2, meta_lr=1e-9),
                       episodes=2, validate_every=1, num_validation=2)
    with pytest.warns(RuntimeWarning, match=r"has not moved validation .* meta learning rate .*log\.jsonl"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_mnist_defaults_learn(tmp_path, monkeypatch):
    """`train --task mnist` with the family's defaults leaves ln 10 within 30 episodes."""
    monkeypatch.setenv("LEARNED_OPTIM_MNIST", mnist_root())
    main(["train", str(tmp_path / "run"), "--task", "mnist", "--episodes", "30", "--validate-every", "30",
          "--num-validation", "5"])
    validations = [e["validation_loss"] for e in Run(tmp_path / "run").log() if "validation_loss" in e]
    assert validations[0] > 2.2 and validations[-1] < 1.5


def test_the_mnist_example_writes_into_the_folder_it_is_given(tmp_path):
    example = Path(__file__).parents[1] / "examples" / "mnist.py"
    env = {**os.environ, "LEARNED_OPTIM_MNIST": mnist_root(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(example), "--steps", "3", "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| LearnedOptimizer" not in result.stdout and "Adam" in result.stdout.splitlines()[-2]
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "mnist_comparison.png").is_file()


def test_first_order_meta_gradient_equals_backpropagating_through_losses_with_detached_gradient_inputs(network):
    """The surrogate the Unroller uses instead of the optimizee's graph gives the same meta-gradient."""
    problem = QuadraticTask(dim=3, num_functions=2).sample(seeded(0))
    meta_loss, _ = Unroller(network, problem, objective="log").unroll(4)
    (surrogate,) = torch.autograd.grad(meta_loss.sum(), network.head.weight)
    theta = problem.params["theta"].reshape(-1).requires_grad_()
    (grad,) = torch.autograd.grad(problem.loss({"theta": theta.view(2, 3)}, 0), theta)
    state = network.initial_state(theta.numel())
    reference = 0
    for step in range(1, 5):  # the rule written out, the optimizee's graph kept, its gradient input detached
        update, state = network(grad.detach(), state)
        theta = theta + update
        loss = problem.loss({"theta": theta.view(2, 3)}, step)
        reference = reference + loss.log()
        (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    (expected,) = torch.autograd.grad(reference, network.head.weight)
    torch.testing.assert_close(surrogate, expected)


def test_the_geometric_mean_validation_is_that_of_the_best_networks_final_losses(tmp_path):
    from learned_optim.meta.tasks import make_task

    main(["train", str(tmp_path / "run"), "--task", "quadratic", "--num-functions", "2", "--episodes", "2",
          "--horizon", "10", "--unroll", "5", "--validate-every", "1", "--num-validation", "3",
          "--validation-metric", "final_geomean", "--validation-baseline", "Adam"])
    run = Run(tmp_path / "run")
    validations = [e for e in run.log() if "validation_loss" in e]
    assert all(e["validation_loss"] == e["validation_final_geomean"] < e["validation_final"] for e in validations)
    baseline = next(e for e in run.log() if e.get("event") == "baseline")
    assert baseline["validation_final_geomean"] < baseline["validation_final"]
    assert all(e["baseline_ratio"] == pytest.approx(e["validation_loss"] / baseline["validation_final_geomean"])
               for e in validations)
    curves = validation_losses(run.best_network(), make_task(run.config.task, "validation"), range(3), 10)
    finals = torch.tensor([sum(curve[-10:]) / 10 for curve in curves], dtype=torch.float64)
    assert run.summary()["best"]["validation_loss"] == pytest.approx(float(finals.log().mean().exp()), rel=1e-6)
