"""Fine-tune a learned optimizer for your own model family, compare it with tuned Adam, then use it.

    python examples/meta_train_your_model.py [--horizon 200] [--budget 8m] [--out outputs/teacher-regression]

``make_task(split)`` is all the library needs: a ModuleTask of your model factory, minibatch sampler and loss (the
same function works on the command line: ``python -m learned_optim.meta train RUN --task-module
examples/meta_train_your_model.py:make_task --horizon 200 --budget 8m``). ``fit`` fine-tunes ``l2o-generalist-2`` on
it within the budget (run again to resume), then compares the best network with Adam, its learning rate tuned on
validation problems, on fresh test problems at the horizon and at twice it.
"""

import argparse

import torch
from torch import nn

from learned_optim import LearnedOptimizer
from learned_optim.meta import fit
from learned_optim.meta.tasks import ModuleTask

torch.manual_seed(0)  # the same teacher in every process, so a re-run resumes on the same task
TEACHER = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).requires_grad_(False)


def sample_batch(generator: torch.Generator):
    """Regression onto a fixed random teacher network: 64 fresh inputs per step."""
    x = torch.randn(64, 8, generator=generator)
    return x, TEACHER(x)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))


def make_task(split: str = "train") -> ModuleTask:
    """The family: a fresh student per problem. The data is synthetic, so every split draws fresh inputs (from seeds
    of its own); a task with a dataset would draw ``split``'s minibatches."""
    return ModuleTask(make_model, sample_batch, loss_fn=nn.functional.mse_loss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--horizon", type=int, default=200, help="the steps you will train for (default: 200)")
    parser.add_argument("--budget", default="8m", help="meta-training and validation time, e.g. 90s, 8m (default)")
    parser.add_argument("--episodes", type=int, help="at most this many episodes (default: as many as fit)")
    parser.add_argument("--problems", type=int, default=20, help="test problems in the comparison (default: 20)")
    parser.add_argument("--out", default="outputs/teacher-regression", help="the run folder (run again to resume)")
    args = parser.parse_args()
    result = fit(make_task, args.out, horizon=args.horizon, budget=args.budget, problems=args.problems,
                 **({"episodes": args.episodes} if args.episodes else {}))
    summary = result.run.summary()
    print(f"\n{summary['episode']} episodes in {summary['elapsed_s'] + summary['validation_s']:.0f} s; on "
          f"{args.problems} test problems, mean loss over the last 10 steps:\n{result.table()}\n")

    # The best network is a checkpoint folder: use it like any other.
    model = make_model()
    optimizer = LearnedOptimizer(model.parameters(), pretrained=result.checkpoint, total_steps=args.horizon)
    generator = torch.Generator().manual_seed(123)
    for step in range(args.horizon):
        x, y = sample_batch(generator)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.horizon - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}")
