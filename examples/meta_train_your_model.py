"""Meta-train a learned optimizer for your own model family, then use it in a training loop.

    python examples/meta_train_your_model.py [--episodes 100] [--out outputs/teacher-regression]

A ModuleTask needs a model factory (a fresh model per problem) and a minibatch sampler; the
meta-training loop, validation, checkpoints and resume are the library's. The run goes to
outputs/teacher-regression (run again to resume it); the end compares the learned optimizer with
Adam, its learning rate tuned on other problems of the same family.
"""

import argparse

import torch
from torch import nn

from learned_optim import LearnedOptimizer
from learned_optim.meta.evaluation import BASELINES, run_optimizer, tune
from learned_optim.meta.metrics import METRICS
from learned_optim.meta.tasks import ModuleTask, seeded
from learned_optim.meta.train import RunConfig, train
from learned_optim.meta.truncated import Recipe

torch.manual_seed(0)  # the same teacher, so a re-run resumes on the same task
TEACHER = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).requires_grad_(False)


def sample_batch(generator: torch.Generator):
    """Regression onto a fixed random teacher network."""
    x = torch.randn(64, 8, generator=generator)
    return x, TEACHER(x)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))


parser = argparse.ArgumentParser()
parser.add_argument("--episodes", type=int, default=100, help="meta-training episodes (default: 100)")
parser.add_argument("--out", default="outputs/teacher-regression", help="the run folder (run again to resume)")
args = parser.parse_args()
task = ModuleTask(make_model, sample_batch, loss_fn=nn.functional.mse_loss)
config = RunConfig(
    task={"name": "teacher-regression"},  # a label for run.json; the task object is passed below
    network={"hidden_size": 20, "num_layers": 2, "preprocessing": "log_sign", "p": 10.0, "output_scale": 0.1},
    recipe=Recipe(horizon=100, unroll=20, meta_lr=3e-3, meta_batch=4),  # 4 models per meta-step
    episodes=args.episodes,
    validate_every=min(25, args.episodes),
    num_validation=5,
)
run = train(config, args.out, resume=True, task=task)

# The best network is a checkpoint folder: use it like any other.
model = make_model()
optimizer = LearnedOptimizer(model.parameters(), pretrained=run.best_path)
generator = torch.Generator().manual_seed(123)
for step in range(200):
    x, y = sample_batch(generator)
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    if step % 50 == 0 or step == 199:
        print(f"step {step:3d}  loss {loss.item():.4f}")

# Against a tuned baseline, on problems neither meta-training nor tuning saw.
adam_lr = tune(BASELINES["Adam"], [task.sample(seeded(20_000 + i)) for i in range(3)], steps=200)["final"]
candidates = {"LearnedOptimizer": lambda params: LearnedOptimizer(params, pretrained=run.best_path),
              f"Adam, tuned lr {adam_lr:.3g}": lambda params: BASELINES["Adam"](params, adam_lr)}
problems = [task.sample(seeded(10_000 + i)) for i in range(5)]
for name, make in candidates.items():
    finals = [METRICS["final"](run_optimizer(problem, make, steps=200).losses) for problem in problems]
    print(f"{name:<28} mean loss over the last 10 of 200 steps: {sum(finals) / len(finals):.4f}")
