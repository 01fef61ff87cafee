import dataclasses
import json
import re
import signal
import subprocess
import sys
from unittest import mock

import pytest
import torch
from torch import nn
from torch.func import functional_call

from learned_optim import CoordinatewiseLSTM, LearnedOptimizer, pretrained
from learned_optim.meta.cli import main
from learned_optim.meta.evaluation import BASELINES, compare, run_optimizer
from learned_optim.meta.publish import publish
from learned_optim.meta.tasks import ModuleTask, Problem, QuadraticTask, SimpleTask, mnist_task, paper_convnet, seeded
from learned_optim.meta.train import Run, RunConfig, train
from learned_optim.meta.truncated import Recipe, Unroller, meta_step, train_episode

from conftest import mnist_root, random_network


class LinearRule(nn.Module):
    """The authors' test "network": a linear map 1 -> 1 of the raw gradient, weights zero."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def initial_state(self, n, dtype=torch.float32, device=None):
        return ()

    def initial_moments(self, n, device=None):
        return None

    def forward(self, grad, state):
        return self.linear(grad.unsqueeze(-1)).squeeze(-1), state


def test_golden_x_squared_check_from_the_authors_tests():
    """x0 = 1, unroll 5, Adam at 0.01, one episode of two unrolls (paper-notes.md)."""
    rule = LinearRule()
    meta_optimizer = torch.optim.Adam(rule.parameters(), lr=0.01)
    unroller = Unroller(rule, SimpleTask().sample(seeded(0)))
    meta_loss, first = unroller.unroll(5)
    assert first.flatten().tolist() == [1.0] * 5  # the first unroll makes no move
    assert meta_step(rule, meta_optimizer, meta_loss.sum(), clip=None) == pytest.approx(5.0)
    assert rule.linear.weight.item() == pytest.approx(-0.01) and rule.linear.bias.item() == pytest.approx(-0.01)
    unroller.truncate()
    _, second = unroller.unroll(5)
    assert second[-1].item() == pytest.approx(0.7325327, abs=1e-7)  # f(x) at the end of the second unroll
    assert unroller.theta.item() == pytest.approx(0.8559, abs=1e-4)


def test_simple_task_converges_with_a_zero_initialised_linear_rule():
    rule = LinearRule()
    meta_optimizer = torch.optim.Adam(rule.parameters(), lr=0.01)
    for _ in range(100):
        result = train_episode(rule, meta_optimizer, SimpleTask().sample(seeded(0)), Recipe(meta_lr=0.01))
    assert result["losses"][-1] < 1e-5


def test_meta_gradient_of_a_two_step_unroll_passes_gradcheck():
    """With second derivatives kept, the meta-gradient is the exact derivative of the meta-loss."""
    network = random_network(hidden_size=3, num_layers=1, preprocessing="log_sign", p=5.0).double()
    names = [name for name, _ in network.named_parameters()]
    W, y = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    problem = Problem({"theta": torch.randn(4, dtype=torch.float64)},
                      lambda params, step: (W @ params["theta"] - y).pow(2).sum())

    class Functional(nn.Module):
        def __init__(self, weights):
            super().__init__()
            self.weights = weights

        def initial_state(self, *args, **kwargs):
            return network.initial_state(*args, **kwargs)

        def initial_moments(self, *args, **kwargs):
            return network.initial_moments(*args, **kwargs)

        def forward(self, grad, state):
            return functional_call(network, dict(zip(names, self.weights)), (grad, state))

    def meta_loss(*weights):
        return Unroller(Functional(weights), problem, second_order=True).unroll(2)[0].sum()

    inputs = tuple(p.detach().clone().requires_grad_() for p in network.parameters())
    assert torch.autograd.gradcheck(meta_loss, inputs)


def test_one_meta_step_lowers_the_meta_loss_on_quadratics():
    torch.manual_seed(0)
    network = CoordinatewiseLSTM(preprocessing="none", output_scale=1.0)
    meta_optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    problem = QuadraticTask(num_functions=8).sample(seeded(0))
    before, _ = Unroller(network, problem).unroll(20)
    assert meta_step(network, meta_optimizer, before.sum(), clip=1.0)
    after, _ = Unroller(network, problem).unroll(20)
    assert after.item() < before.item()


def test_log_objective_sums_the_log_losses_of_the_same_trajectory(network):
    problem = QuadraticTask(num_functions=3).sample(seeded(2))
    paper, losses = Unroller(network, problem).unroll(10)
    log, log_losses = Unroller(network, problem, objective="log").unroll(10)
    ratio_unroller = Unroller(network, problem, objective="log_ratio", horizon=40)
    ratio, _ = ratio_unroller.unroll(10)
    assert torch.equal(log_losses, losses)
    torch.testing.assert_close(paper, losses.sum(0))
    torch.testing.assert_close(log, losses.log().sum(0))
    torch.testing.assert_close(ratio, (losses / ratio_unroller.initial_loss).log().sum(0) / 40)
    final, _ = Unroller(network, problem, objective="log_final", horizon=10).unroll(10)
    torch.testing.assert_close(final, losses.log().sum(0))  # a horizon of 10: every step is in the final window
    final, _ = Unroller(network, problem, objective="log_final", horizon=13).unroll(10)
    torch.testing.assert_close(final, losses[3:].log().sum(0))  # steps 4-10 of 13
    with pytest.raises(ValueError, match="Invalid objective: 'mean'"):
        Recipe(objective="mean")
    with pytest.raises(ValueError, match="log_final objective needs one unroll over the whole horizon"):
        Recipe(objective="log_final", horizon=100, unroll=20)


def test_non_finite_meta_loss_or_gradient_skips_the_meta_step():
    network = random_network(hidden_size=4, num_layers=1)
    meta_optimizer = torch.optim.Adam(network.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    weight = network.head.weight
    assert meta_step(network, meta_optimizer, weight.sum() * float("nan"), clip=None) is None
    finite_loss_inf_gradient = (weight - weight.detach()).abs().sum().sqrt()
    assert meta_step(network, meta_optimizer, finite_loss_inf_gradient, clip=None) is None
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())
    assert not meta_optimizer.state


def test_meta_training_trajectory_equals_learned_optimizer_trajectory(network):
    problem = QuadraticTask(num_functions=3).sample(seeded(1))
    _, unrolled = Unroller(network, problem).unroll(15)
    through_optimizer = run_optimizer(problem, lambda params: LearnedOptimizer(params, network), 16).losses
    torch.testing.assert_close(unrolled.flatten(), torch.tensor(through_optimizer[1:]))
    torch.testing.assert_close(Unroller(network, problem).rollout(16).flatten(), torch.tensor(through_optimizer))


def test_quadratic_functions_are_independent_and_summed():
    problem = QuadraticTask(dim=4, num_functions=3).sample(seeded(0))
    theta = problem.params["theta"].clone().requires_grad_()
    (grad,) = torch.autograd.grad(problem.loss({"theta": theta}, 0), theta)
    moved = theta.detach().clone()
    moved[1:] += 5.0
    moved.requires_grad_()
    (grad_moved,) = torch.autograd.grad(problem.loss({"theta": moved}, 0), moved)
    torch.testing.assert_close(grad[0], grad_moved[0])
    single = torch.autograd.functional.jacobian(
        lambda t: problem.loss({"theta": torch.cat([t[None], theta[1:]])}, 0), theta[0])
    torch.testing.assert_close(single, grad[0])


def test_module_task_uses_functional_call_and_fixed_minibatches():
    task = ModuleTask(lambda: nn.Linear(3, 2),
                      lambda g: (torch.randn(8, 3, generator=g), torch.randint(2, (8,), generator=g)))
    a, b = task.sample(seeded(0)), task.sample(seeded(0))
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])
    assert a.loss(a.params, 3).item() == b.loss(b.params, 3).item() != a.loss(a.params, 4).item()
    params = {k: v.clone().requires_grad_() for k, v in a.params.items()}
    a.loss(params, 0).backward()
    assert all(p.grad is not None for p in params.values())


TINY = ["--task", "quadratic", "--num-functions", "2", "--episodes", "8", "--horizon", "10", "--unroll", "5",
        "--validate-every", "4", "--num-validation", "2", "--meta-lr", "0.003"]


def checkpoint_weights(folder):
    return Run(folder).checkpoint()["network"]


KILL_DURING_CHECKPOINT = """
import os, signal, sys
from learned_optim.meta import train as training
from learned_optim.meta.cli import main

real_write, writes = training.write_file_atomic, []


def write_then_die(path, write):
    if path.name == "checkpoint.pt":
        writes.append(path)
        if len(writes) == int(sys.argv[1]):  # killed halfway through this write (the first is episode 0's)
            return real_write(path, lambda handle: (handle.write(b"half a checkpoint"), handle.flush(),
                                                    os.kill(os.getpid(), signal.SIGKILL)))
    return real_write(path, write)


training.write_file_atomic = write_then_die
main(sys.argv[2:])
"""


def test_resume_after_a_kill_ends_with_the_uninterrupted_weights(tmp_path):
    """A run SIGKILLed while writing episode 5's checkpoint resumes from episode 4's and ends bitwise where the
    uninterrupted run ends, with one log line per episode."""
    main(["train", str(tmp_path / "whole"), *TINY])
    killed = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-c", KILL_DURING_CHECKPOINT, "6", "train", str(killed), *TINY],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert Run(killed).checkpoint()["episode"] == 4
    main(["train", str(killed), "--resume"])
    whole, resumed = checkpoint_weights(tmp_path / "whole"), checkpoint_weights(killed)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    episodes = [e["episode"] for e in Run(killed).log() if "meta_loss" in e]
    assert episodes == list(range(1, 9))
    assert sorted(path.name for path in Run(killed).best_path.iterdir()) == ["config.json", "model.safetensors"]


def test_train_refuses_to_overwrite_a_run(tmp_path):
    main(["train", str(tmp_path / "run"), *TINY, "--episodes", "1"])
    with pytest.raises(FileExistsError, match="--resume"):
        train(RunConfig(), tmp_path / "run")


def test_resume_keeps_the_recorded_config_and_refuses_another(tmp_path):
    main(["train", str(tmp_path / "run"), *TINY, "--episodes", "1"])
    recorded = Run(tmp_path / "run").config
    with pytest.raises(ValueError, match="holds a run with another config"):
        train(dataclasses.replace(recorded, seed=1), tmp_path / "run", resume=True, progress=False)
    train(dataclasses.replace(recorded, episodes=2), tmp_path / "run", resume=True, progress=False)
    assert Run(tmp_path / "run").checkpoint()["episode"] == 2 and Run(tmp_path / "run").config.episodes == 2
    with pytest.raises(ValueError, match="holds no run to resume"):
        train(None, tmp_path / "none", resume=True)


def test_cli_train_evaluate_publish_and_push(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", str(run), *TINY])
    said, bars = capsys.readouterr()
    assert said.startswith("meta-training on {\"name\": \"quadratic\"") and f"into {run}/" in said
    assert f"the network is in {run / 'best'}/" in said
    log = Run(run).log()
    assert [e["episode"] for e in log if "validation_loss" in e] == [0, 4, 8]
    # not a terminal: one line per validation, no progress bar
    lines = [line for line in said.splitlines() if line.startswith("episode ")]
    assert [int(line.split("/")[0].split()[1]) for line in lines] == [0, 4, 8]
    assert "\r" not in bars + said
    main(["evaluate", "--run", str(run), "--steps", "10", "--problems", "3", "--tuning-problems", "2"])
    printed = capsys.readouterr().out
    assert printed.startswith("evaluating against SGD, NAG, RMSprop and Adam, each with its learning rate tuned "
                              "per panel") and "results written to" in printed
    assert "| LSTM |" in printed and "| Adam |" in printed
    # not a terminal: one timed line per stage, for logs of evaluations that run for hours
    stages = [line for line in printed.splitlines() if line.endswith(" s)")]
    assert [line.split(":")[0] for line in stages] == ["LSTM", *[name for name in BASELINES for _ in "tr"]]
    assert re.match(r"Adam: tuned on 2 problems over 16 rates, lr [0-9.e-]+ for final, [0-9.e-]+ for sum \(",
                    stages[-2])
    assert stages[-1].startswith("Adam: 3 problems, final ")
    results = json.loads((run / "evaluation" / "quadratic.json").read_text())
    assert [r["name"] for r in results["results"]] == ["LSTM", "SGD", "NAG", "RMSprop", "Adam"]
    assert (run / "evaluation" / "quadratic.png").stat().st_size > 0

    with mock.patch("huggingface_hub.HfApi.create_repo") as create, \
            mock.patch("huggingface_hub.HfApi.upload_folder") as upload:
        main(["publish", str(run), "--out", str(tmp_path / "ckpt"), "--repo-id", "org/l2l-test"])
    create.assert_called_once()
    assert upload.call_args.kwargs["repo_id"] == "org/l2l-test"
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "Meta-training wall-clock" in card and "| Adam |" in card and '"meta_lr": 0.003' in card
    assert 'pretrained="org/l2l-test"' in card  # the snippet loads from anywhere
    loaded = CoordinatewiseLSTM.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.head.weight, Run(run).best_network().head.weight)


def test_evaluate_reuses_an_earlier_evaluations_baselines_and_refuses_other_settings(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", str(run), *TINY, "--episodes", "1"])
    evaluate = ["evaluate", "--run", str(run), "--steps", "10", "--problems", "3", "--tuning-problems", "2"]
    main([*evaluate, "--out", str(tmp_path / "first")])
    with mock.patch("learned_optim.meta.evaluation.tune", side_effect=AssertionError("baselines tuned again")):
        capsys.readouterr()
        main([*evaluate, "--out", str(tmp_path / "second"), "--baselines-from", str(tmp_path / "first")])
    assert "\nbaselines read from an earlier evaluation: SGD, NAG, RMSprop, Adam (" in capsys.readouterr().out
    first, second = (json.loads((tmp_path / folder / "quadratic.json").read_text()) for folder in ("first", "second"))
    assert second["results"] == first["results"] and second["baselines_from"] == str(tmp_path / "first")
    readme = (tmp_path / "second" / "README.md").read_text()
    assert "the baselines' results are those measured in" in readme
    assert re.search(r"\| [0-3] / 3 \| [0-3] / 3 \|", readme)  # the per-problem comparison, from the earlier finals
    assert len(first["results"][-1]["problem_finals"]) == 3
    main([*evaluate, "--out", str(tmp_path / "adam"), "--baselines-from", str(tmp_path / "first"),
          "--baselines", "Adam"])
    adam = json.loads((tmp_path / "adam" / "quadratic.json").read_text())["results"]
    assert adam == [first["results"][0], first["results"][-1]] and adam[-1]["name"] == "Adam"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*evaluate[:-1], "3", "--out", str(tmp_path / "third"), "--baselines-from", str(tmp_path / "first")])
    refused = capsys.readouterr().err
    assert "was measured with other settings" in refused and "'tuning_problems': (2, 3)" in refused
    with pytest.raises(SystemExit):
        main([*evaluate, "--out", str(tmp_path / "fourth"), "--baselines-from", str(tmp_path / "missing")])
    assert "missing does not exist; point at the folder of an earlier evaluation" in capsys.readouterr().err
    older = tmp_path / "older"  # an evaluation from before per-problem finals were kept: the best baseline reruns
    older.mkdir()
    kept = json.loads(json.dumps(first))
    for result in kept["results"]:
        del result["problem_finals"]
    (older / "quadratic.json").write_text(json.dumps(kept))
    main([*evaluate, "--out", str(tmp_path / "refilled"), "--baselines-from", str(older)])
    refilled = json.loads((tmp_path / "refilled" / "quadratic.json").read_text())["results"]
    best = min(first["results"][1:], key=lambda r: r["metrics"]["final"])
    assert [r["problem_finals"] for r in refilled if r["name"] == best["name"]] == [best["problem_finals"]]
    assert sum(bool(r["problem_finals"]) for r in refilled) == 2  # the LSTM's and the best baseline's
    assert re.search(r"\| [0-3] / 3 \| [0-3] / 3 \|", (tmp_path / "refilled" / "README.md").read_text())
    best_kept = next(r for r in kept["results"] if r["name"] == best["name"])
    best_kept["metrics"]["final"] *= 1.1  # recorded on other problems
    (older / "quadratic.json").write_text(json.dumps(kept))
    with pytest.raises(SystemExit):
        main([*evaluate, "--out", str(tmp_path / "mismatch"), "--baselines-from", str(older)])
    assert "its problems were not these" in capsys.readouterr().err
    (tmp_path / "other").mkdir()  # an evaluation without this panel: its baselines are tuned here
    main([*evaluate, "--out", str(tmp_path / "fifth"), "--baselines-from", str(tmp_path / "other")])
    fifth = json.loads((tmp_path / "fifth" / "quadratic.json").read_text())
    assert "baselines_from" not in fifth and fifth["results"] == first["results"]


def test_evaluate_runs_the_named_panels_of_a_suite_and_refuses_unknown_ones(checkpoint, capsys):
    with mock.patch("learned_optim.meta.cli.run_suite") as evaluate:
        main(["evaluate", "--checkpoint", str(checkpoint), "--suite", "generalist", "--panels", "mnist-convnet-100",
              "mnist-20-relu-100"])
    assert list(evaluate.call_args.args[1]) == ["mnist-20-relu-100", "mnist-convnet-100"]  # the suite's order
    for wrong in (["--suite", "generalist", "--panels", "mnist-40-sigmoid-100"], ["--panels", "mnist-convnet-100"]):
        with pytest.raises(SystemExit):
            main(["evaluate", "--checkpoint", str(checkpoint), *wrong])
        assert "--panels" in capsys.readouterr().err


def test_baselines_at_the_rates_an_earlier_tuning_chose_end_as_tuned_ones_do():
    task, network = QuadraticTask(dim=3, num_functions=2), random_network()
    tuned = compare(network, task, 10, 3, 2, lr_grid=[0.01, 0.1, 1.0])
    rates = {summary.name: summary.learning_rates for summary in tuned[1:]}
    again = compare(network, task, 10, 3, 2, lr_grid=[0.01, 0.1, 1.0], tuned_rates=rates)
    assert [(s.name, s.learning_rates, s.metrics) for s in again] == [(s.name, s.learning_rates, s.metrics)
                                                                       for s in tuned]
    other = {name: {metric: 0.001 for metric in by_metric} for name, by_metric in rates.items()}
    assert compare(network, task, 10, 3, 2, tuned_rates=other)[1].learning_rates == other["SGD"]


def test_evaluate_without_baselines_runs_the_network_alone(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", str(run), *TINY, "--episodes", "1"])
    capsys.readouterr()
    with mock.patch("learned_optim.meta.evaluation.tune", side_effect=AssertionError("a baseline was tuned")):
        main(["evaluate", "--run", str(run), "--steps", "5", "--problems", "2", "--baselines"])
    assert capsys.readouterr().out.startswith("evaluating against no baseline (")
    results = json.loads((run / "evaluation" / "quadratic.json").read_text())["results"]
    assert [r["name"] for r in results] == ["LSTM"]
    readme = (run / "evaluation" / "README.md").read_text()
    assert re.search(r"\| [0-9.e+-]+ ± [0-9.e+a-z-]+ \| – \| – \| – \| [0-2] / 2 \|", readme)
    assert "2 problems; no baseline" in readme


def test_published_card_compares_the_ablation_runs_at_their_common_validations(tmp_path):
    main(["train", str(tmp_path / "a"), *TINY])
    main(["train", str(tmp_path / "b"), *TINY, "--meta-lr", "0.01", "--episodes", "4"])
    main(["publish", str(tmp_path / "a"), "--out", str(tmp_path / "ckpt"), "--ablation", str(tmp_path / "b")])
    card = (tmp_path / "ckpt" / "README.md").read_text()
    section = card[card.index("## Ablation"):]
    assert "| run | differs in | episode 0 | episode 4 | best (episode) |" in section  # b stopped at 4
    first, second = [line for line in section.splitlines() if line.startswith("| `")]
    assert first.startswith("| `a` | `recipe.meta_lr=0.003` |") and second.startswith("| `b` | `recipe.meta_lr=0.01` |")
    a_losses = {e["episode"]: e["validation_loss"] for e in Run(tmp_path / "a").log() if "validation_loss" in e}
    assert f"| {a_losses[4]:.4g} |" in first


def test_published_card_of_a_fine_tune_names_every_stage_and_their_total_time(tmp_path):
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    main(["train", str(first), *TINY, "--episodes", "2"])
    main(["train", str(second), *TINY, "--episodes", "2", "--init", str(first / "best")])
    main(["train", str(third), *TINY, "--episodes", "2", "--init", str(second / "best"), "--meta-lr", "0.001"])
    card = (publish(third, tmp_path / "ckpt") / "README.md").read_text()
    stages = card[card.index("- Earlier stages"):].splitlines()[0]
    assert stages.index(f"`{first}` (2 episodes, best at ") < stages.index(f"`{second}` (2 episodes, best at ")
    assert f"`{third}`" not in stages and stages.count(" episodes, ") == 2
    summaries = [Run(run).summary() for run in (first, second, third)]
    assert all(c["validation_s"] > 0 for c in summaries)
    assert [c["validation_s"] for c in summaries] == [Run(run).checkpoint()["validation_s"]
                                                      for run in (first, second, third)]
    total = sum(c["elapsed_s"] + c["validation_s"] for c in summaries)
    validation = sum(c["validation_s"] for c in summaries)
    assert f"Wall-clock of all stages: {total:.0f} s ({total / 3600:.2f} h), of which {validation:.0f} s validation." \
        in stages
    assert "Earlier stages" not in (publish(first, tmp_path / "first-ckpt") / "README.md").read_text()


def test_card_of_a_run_whose_validation_was_not_timed_says_its_time_counts_episodes_only(tmp_path):
    main(["train", str(tmp_path / "run"), *TINY, "--episodes", "2"])
    run = Run(tmp_path / "run")
    checkpoint = run.checkpoint()
    checkpoint["validation_s"] = None  # as runs that did not time their validation recorded it
    torch.save(checkpoint, run.checkpoint_path)
    lines = run.log_path.read_text().splitlines()
    last = json.loads(lines[-1])
    lines[-1] = json.dumps({**last, "validation_s": None})
    run.log_path.write_text("\n".join(lines) + "\n")
    card = (publish(tmp_path / "run", tmp_path / "ckpt") / "README.md").read_text()
    assert f"wall-clock: {last['elapsed_s']:.0f} s (" in card and "episodes only (validation not timed)" in card
    main(["train", str(tmp_path / "run"), "--resume", "--episodes", "3"])  # a resumed untimed run stays untimed
    assert Run(tmp_path / "run").summary()["validation_s"] is None


def test_the_run_summary_comes_from_the_log_as_training_kept_it(tmp_path):
    main(["train", str(tmp_path / "run"), *TINY, "--episodes", "3"])
    run = Run(tmp_path / "run")
    summary, checkpoint = run.summary(), run.checkpoint()
    assert summary["episode"] == checkpoint["episode"] == 3
    assert summary["best"] == {k: checkpoint["best"][k] for k in ("episode", "validation_loss")}
    assert (summary["elapsed_s"], summary["validation_s"]) == (checkpoint["elapsed_s"], checkpoint["validation_s"])
    run.checkpoint_path.unlink()  # a kept run folder has none
    assert run.summary() == summary
    horizon = run.log()[-1]["validation_horizon"]
    worse = {"episode": 4, "validation_loss": summary["best"]["validation_loss"] + 1, "validation_horizon": horizon}
    with run.log_path.open("a") as log:
        log.write(json.dumps(worse) + "\n")
    assert run.summary()["best"] == summary["best"]  # the best, not the last
    with run.log_path.open("a") as log:  # a curriculum's longer horizon: its validations alone compete
        log.write(json.dumps({**worse, "episode": 5, "validation_horizon": horizon * 2}) + "\n")
    assert run.summary()["best"]["episode"] == 5


def test_ablation_refuses_runs_validated_differently(tmp_path, capsys):
    main(["train", str(tmp_path / "a"), *TINY, "--episodes", "1"])
    main(["train", str(tmp_path / "b"), *TINY, "--episodes", "1", "--num-validation", "3"])
    with pytest.raises(SystemExit):
        main(["publish", str(tmp_path / "a"), "--out", str(tmp_path / "ckpt"), "--ablation", str(tmp_path / "b")])
    assert "ablation runs must validate alike" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_mnist_suite_evaluates_the_papers_five_panels_with_the_mnist_protocol(checkpoint):
    from learned_optim.meta.tasks.registry import DEFAULTS

    with mock.patch("learned_optim.meta.cli.run_suite") as evaluate:
        main(["evaluate", "--checkpoint", str(checkpoint), "--suite", "mnist-paper", "--problems", "12"])
    _, panels, protocol = evaluate.call_args.args[:3]
    assert protocol == {**DEFAULTS["mnist"]["evaluation"], "problems": 12}
    assert {panel.steps for panel in panels.values()} == {100, 200}
    assert all(panel.spec["name"] == "mnist" for panel in panels.values())
    assert {panel.spec.get("activation", "sigmoid") for panel in panels.values()} == {"sigmoid", "relu"}


def test_resume_with_more_episodes_extends_a_finished_run(tmp_path):
    run = tmp_path / "run"
    main(["train", str(run), *TINY, "--episodes", "2"])
    main(["train", str(run), "--resume", "--episodes", "3"])
    assert Run(run).checkpoint()["episode"] == 3
    assert [e["episode"] for e in Run(run).log() if "meta_loss" in e] == [1, 2, 3]


def test_resume_before_the_first_checkpoint_keeps_the_runs_own_config(tmp_path):
    run = tmp_path / "run"
    main(["train", str(run), *TINY, "--episodes", "1"])
    (run / "checkpoint.pt").unlink()  # killed before anything was checkpointed
    main(["train", str(run), "--resume"])
    assert Run(run).config.task == {"name": "quadratic", "num_functions": 2}
    assert Run(run).checkpoint()["episode"] == 1


def test_init_fine_tunes_a_checkpoint(tmp_path):
    first = tmp_path / "first"
    main(["train", str(first), *TINY, "--episodes", "2"])
    main(["train", str(tmp_path / "tuned"), *TINY, "--episodes", "1", "--init", str(first / "best"),
          "--objective", "log"])
    tuned = Run(tmp_path / "tuned").log()
    start = [e["validation_loss"] for e in tuned if "validation_loss" in e][0]
    assert start == Run(first).checkpoint()["best"]["validation_loss"]  # the same problems, the same network
    assert Run(tmp_path / "tuned").config.init == str(first / "best")


def test_init_may_add_a_nominal_term_which_is_no_weight(tmp_path, capsys):
    """A fine-tune with ``--nominal`` starts from the checkpoint's weights with the nominal term added, as a network
    built with it and loaded with those weights (and ends with it in its config); a checkpoint's own term is kept
    without being restated, as every network option of the checkpoint is."""
    first, adam = tmp_path / "first", ["--preprocessing", "adam", "--output", "tanh"]
    main(["train", str(first), *TINY, *adam, "--episodes", "2"])
    start = CoordinatewiseLSTM.from_pretrained(first / "best")
    added = CoordinatewiseLSTM(**{**start.config, "nominal": 0.01})
    added.load_state_dict(start.state_dict())
    added.save_pretrained(tmp_path / "added")
    main(["train", str(tmp_path / "tuned"), *TINY, *adam, "--episodes", "1", "--init", str(first / "best"),
          "--nominal", "0.01"])
    main(["train", str(tmp_path / "from-added"), *TINY, "--episodes", "1", "--init", str(tmp_path / "added")])
    starts = [[e["validation_loss"] for e in Run(tmp_path / name).log() if "validation_loss" in e][0]
              for name in ("tuned", "from-added")]
    assert starts[0] == starts[1] != Run(first).checkpoint()["best"]["validation_loss"]
    assert Run(tmp_path / "tuned").best_network().nominal == Run(tmp_path / "from-added").config.network["nominal"]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a checkpoint's own term is not changed
        main(["train", str(tmp_path / "other"), *TINY, "--init", str(tmp_path / "added"), "--nominal", "0.02"])
    assert re.search(r"has config .*'nominal': 0.01.* but the run's network is .*'tanh', 'nominal': 0.02}",
                     capsys.readouterr().err)


def test_init_step_scale_fine_tunes_the_checkpoint_with_its_step_scaled(tmp_path):
    """``--init-step-scale 2`` starts from the checkpoint as ``with_step_scale(2)`` saves it (output scale 1 -> 2)."""
    first = tmp_path / "first"
    main(["train", str(first), *TINY, "--episodes", "2"])
    CoordinatewiseLSTM.from_pretrained(first / "best").with_step_scale(2).save_pretrained(tmp_path / "saved")
    main(["train", str(tmp_path / "scaled"), *TINY, "--episodes", "1", "--init", str(first / "best"),
          "--init-step-scale", "2"])
    main(["train", str(tmp_path / "from-saved"), *TINY, "--episodes", "1", "--init", str(tmp_path / "saved")])
    starts = [[e["validation_loss"] for e in Run(tmp_path / name).log() if "validation_loss" in e][0]
              for name in ("scaled", "from-saved")]
    assert starts[0] == starts[1] != Run(first).checkpoint()["best"]["validation_loss"]
    assert Run(tmp_path / "scaled").config.init_step_scale == 2
    card = (publish(tmp_path / "scaled", tmp_path / "ckpt") / "README.md").read_text()
    assert f"initialised from `{first / 'best'}` with its step scaled by 2.0." in card


def test_publish_with_a_scale_rate_bolts_step_scale_control_on_the_best_network_and_says_so(tmp_path, capsys):
    main(["train", str(tmp_path / "run"), *TINY, "--episodes", "1"])
    main(["publish", str(tmp_path / "run"), "--out", str(tmp_path / "ckpt"), "--scale-rate", "0.03"])
    published = CoordinatewiseLSTM.from_pretrained(tmp_path / "ckpt")
    best = Run(tmp_path / "run").best_network()
    assert published.scale_rate == 0.03 and best.scale_rate == 0
    assert published.config == {**best.config, "scale_rate": 0.03}
    assert all(torch.equal(a, b) for a, b in zip(published.state_dict().values(), best.state_dict().values()))
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert ("- After meta-training: the step-scale control rate (`scale_rate`) set to 0.03; the run's best network "
            "was meta-trained with 0.0 (no control).") in card
    assert '"scale_rate": 0.03' in card
    main(["publish", str(tmp_path / "run"), "--out", str(tmp_path / "plain")])
    assert "After meta-training" not in (tmp_path / "plain" / "README.md").read_text()
    with pytest.raises(SystemExit):
        main(["publish", str(tmp_path / "run"), "--out", str(tmp_path / "bad"), "--scale-rate", "2"])
    assert "Invalid scale_rate: 2.0; it must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert CoordinatewiseLSTM.from_pretrained(tmp_path / "plain").config == best.config


@pytest.mark.parametrize("argv, message", [
    (["train", "RUN", "--task", "mnist", "--num-functions", "3"], "does not take options \\['num_functions'\\]"),
    (["train", "RUN", "--init", "l2l-mnist", "--preprocessing", "none"],
     "init checkpoint 'l2l-mnist' has config .* leave out the network options that differ"),
    (["train", "RUN", "--init", "l2l-mnist", "--init-step-scale", "2", "--output-scale", "0.1"],
     "with its step scaled by 2.0 has config .*'output_scale': 0.2"),
    (["train", "RUN", "--init-step-scale", "2"], "scales the init checkpoint's step, but there is no init"),
    (["train", "RUN", "--init", "l2l-mnist", "--init-step-scale", "0"], "Invalid init_step_scale: 0.0; it must be"),
    (["evaluate", "--checkpoint", "no-such-checkpoint"], "unknown checkpoint 'no-such-checkpoint'"),
    (["evaluate", "--run", "RUN"], "not a run folder"),
])
def test_cli_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_the_command_line_names_logistic_regression_by_no_hidden_layer():
    from learned_optim.meta.cli import build_parser, run_config

    config = run_config(build_parser().parse_args(["train", "RUN", "--task", "mnist", "--hidden-sizes",
                                                   "--init", "l2o-generalist-3"]))
    assert config.task["hidden_sizes"] == [] and config.network == pretrained.load("l2o-generalist-3").config


def test_models_with_running_statistics_run_together_each_with_its_own():
    """A meta-batch of batch-norm models (vmap, each with its own running statistics) gives each model's loss as
    alone."""
    task = ModuleTask(lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)),
                      lambda g: (torch.randn(8, 3, generator=g), torch.randint(2, (8,), generator=g)))
    batch = task.sample_many([seeded(0), seeded(1)])
    alone = [task.sample(seeded(k)) for k in range(2)]
    for step in range(3):
        torch.testing.assert_close(batch.loss(batch.params, step),
                                   torch.stack([problem.loss(problem.params, step) for problem in alone]))


def test_papers_convnet_is_the_cifar_architecture_and_trains_on_mnist():
    model = paper_convnet()
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 16, (5, 5)), (16, 16, (5, 5)),
                                                                              (16, 16, (5, 5))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 3
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [32, 10]
    assert sum(p.numel() for p in model.parameters()) == 18_314
    root = mnist_root()
    problem = mnist_task(paper_convnet, "test", root=root).sample(seeded(0))
    losses = run_optimizer(problem, lambda params: torch.optim.Adam(params, lr=3e-3), 15).losses
    assert abs(losses[0] - 2.3) < 0.3 and sum(losses[-3:]) / 3 < losses[0] - 0.3
    # meta-training runs a meta-batch of them together (vmap), each with its own batch norm statistics
    batch = mnist_task(paper_convnet, "test", root=root).sample_many([seeded(1), seeded(2)])
    assert batch.loss(batch.params, 0).shape == (2,)


def test_the_memory_of_an_unroll_is_measured_per_problem_and_step():
    from learned_optim.meta.truncated import unroll_memory

    network, task = random_network(), QuadraticTask(dim=50, num_functions=4)
    one, two = (unroll_memory(network, task.sample_many([seeded(k) for k in range(n)]), Recipe(horizon=40, unroll=20))
                for n in (1, 2))
    assert one > 0 and two == pytest.approx(2 * one, rel=0.1)  # the graph of 2 problems holds twice the tensors
    longer = unroll_memory(network, task.sample_many([seeded(0)]), Recipe(horizon=40, unroll=40))
    assert longer == pytest.approx(2 * one, rel=0.01)


def test_the_memory_of_an_unroll_leaves_out_the_optimizees_own_graph():
    """An optimizee's activations are freed once its gradient is taken: a batch 64 times larger keeps no more."""
    from learned_optim.meta.truncated import unroll_memory

    def regression(batch):
        return ModuleTask(lambda: nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 1)),
                          lambda g: (torch.randn(batch, 4, generator=g), torch.zeros(batch, 1)), nn.functional.mse_loss)

    small, large = (unroll_memory(random_network(), regression(batch).sample_many([seeded(0)]),
                                  Recipe(horizon=10, unroll=10)) for batch in (16, 1024))
    assert large == pytest.approx(small, rel=0.05)


def test_a_recipe_whose_unroll_would_not_fit_in_memory_is_refused_naming_the_fix(tmp_path):
    from learned_optim.meta import train as training

    config = RunConfig(recipe=Recipe(horizon=20, unroll=20, meta_batch=4), episodes=1, num_validation=2)
    with mock.patch.object(training, "available_memory", return_value=1_000), \
            pytest.raises(ValueError, match=r"lower the meta-batch \(--meta-batch 1 or fewer, and the unroll\)"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    pes = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, estimator="pes"))
    with mock.patch.object(training, "available_memory", return_value=1_000):
        train(pes, tmp_path / "pes", progress=False)  # forward passes only: no graph to keep
