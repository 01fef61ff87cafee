"""Meta-training speed: seconds per MNIST episode (784-20-10 MLP, batch 128, 100 steps, unroll 20).

    python benchmarks/meta_training.py [--episodes 3]

Compares our truncated-BPTT episode with a straightforward implementation of the same rule (one
``nn.LSTMCell`` call per layer, state stacked into one tensor per step), measured in the same run
on the same problems, and prints the ratio. Needs MNIST (see learned_optim.meta.data).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM
from learned_optim.meta.registry import DEFAULTS, make_task
from learned_optim.meta.tasks import seeded
from learned_optim.meta.truncated import Recipe, train_episode
from learned_optim.preprocessing import PREPROCESSINGS


class StraightforwardLSTM(nn.Module):
    """The same network, written the obvious way: nn.LSTMCell per layer, state as one stacked tensor."""

    def __init__(self, network: CoordinatewiseLSTM) -> None:
        super().__init__()
        self.network = network

    def initial_state(self, n, dtype=torch.float32, device=None):
        return self.network.initial_state(n, dtype, device)

    def forward(self, grad, state):
        net = self.network
        x = PREPROCESSINGS[net.preprocessing][0](grad, net.p)
        new_state = []
        for layer, cell in enumerate(net.cells):
            h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
            new_state += [h, c]
            x = h
        return net.head(x).squeeze(1) * net.output_scale, torch.stack(new_state)


def seconds_per_episode(rule: nn.Module, task, episodes: int) -> float:
    meta_optimizer = torch.optim.Adam(rule.parameters(), lr=3e-3)
    train_episode(rule, meta_optimizer, task.sample(seeded(0)), Recipe())  # warm-up
    times = []
    for episode in range(episodes):
        started = time.perf_counter()
        train_episode(rule, meta_optimizer, task.sample(seeded(episode + 1)), Recipe())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    args = parser.parse_args()
    task = make_task(DEFAULTS["mnist"]["task"])
    torch.manual_seed(0)
    network = CoordinatewiseLSTM(**DEFAULTS["mnist"]["network"])
    results = {"straightforward (nn.LSTMCell)": seconds_per_episode(StraightforwardLSTM(network), task, args.episodes),
               "learned_optim": seconds_per_episode(network, task, args.episodes)}
    network.compile(dynamic=False)  # what `train --compile` does
    results["learned_optim, --compile"] = seconds_per_episode(network, task, args.episodes)
    reference = results["straightforward (nn.LSTMCell)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| implementation | s / episode | episodes / s | speed-up |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {1 / seconds:.2f} | {reference / seconds:.2f} |")


if __name__ == "__main__":
    main()
