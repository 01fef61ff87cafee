"""Train an MLP on MNIST with LearnedOptimizer and with Adam, in an ordinary PyTorch loop.

    python examples/mnist.py --steps 200 [--out outputs]

Needs the MNIST files: set LEARNED_OPTIM_MNIST to a folder holding them, or let
learned_optim.meta.tasks.mnist download them once into ~/.cache/learned_optim/mnist.
"""

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learned_optim import LearnedOptimizer
from learned_optim.meta.tasks.mnist import load_split


def make_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(784, 20), nn.Sigmoid(), nn.Linear(20, 10))
    for p in model.parameters():  # small Gaussian init, as in the paper's MNIST experiment
        nn.init.normal_(p, std=0.01)
    return model


def train(model, optimizer, loader, steps):
    losses = []
    batches = iter(loader)
    for step in range(1, steps + 1):
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            print(f"  step {step:4d}  loss {sum(losses[-20:]) / 20:.4f}")
    return losses


@torch.no_grad()
def test_accuracy(model, images, labels):
    logits = model(images)
    return nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--adam-lr", type=float, default=0.02)  # about the tuned rate (docs/mnist)
    parser.add_argument("--out", default="outputs", help="folder for the plot (default: ./outputs)")
    args = parser.parse_args()

    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    results, summary = {}, {}
    for name in ("LearnedOptimizer", "Adam"):
        torch.manual_seed(0)
        loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=128, shuffle=True)
        model = make_model()
        if name == "LearnedOptimizer":
            optimizer = LearnedOptimizer(model.parameters())  # the default, l2o-generalist-3
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=args.adam_lr)
        print(name)
        results[name] = train(model, optimizer, loader, args.steps)
        summary[name] = test_accuracy(model, test_images, test_labels)
    print(f"\n{'optimizer':<18}{'final loss (mean of last 20)':>30}{'test loss':>11}{'test accuracy':>15}")
    for name, (loss, accuracy) in summary.items():
        print(f"{name:<18}{sum(results[name][-20:]) / 20:>30.4f}{loss:>11.4f}{accuracy:>15.1%}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, losses in results.items():
        plt.plot(range(1, len(losses) + 1), losses, label=name)
    plt.yscale("log")
    plt.xlabel("step")
    plt.ylabel("minibatch loss")
    plt.legend()
    plt.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plt.savefig(out / "mnist_comparison.png", dpi=120)
    print(f"saved {out / 'mnist_comparison.png'}")


if __name__ == "__main__":
    main()
