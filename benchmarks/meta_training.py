"""Meta-training throughput: optimizee-steps per second on the MNIST MLP (784-20-10, batch 128, unroll 20).

    python benchmarks/meta_training.py [--episodes 2] [--meta-batch 8 32] [--horizon 100] [--device cuda]

Measured in the same run on the same problems, every row's ratio against the previous engine (one
optimizee per episode, the LSTM differentiated by autograd), which is also what ``K`` separate runs
give: a straightforward ``nn.LSTMCell`` version, the previous engine, today's engine with one
optimizee (the chunked hand-written backward) and with ``K`` optimizees run together in one
meta-batch. A second table times the validation rollouts (the rule applied without a meta-graph, K
problems at once): the chunked forward they ran before against the no-grad step they run now, with
and without the fused CPU kernel. A third races the gradient estimators on K problems: truncated BPTT
against persistent evolution strategies (learned_optim.meta.pes). Needs MNIST (see learned_optim.meta.tasks.mnist).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
from torch import nn

from learned_optim import CoordinatewiseLSTM, kernel
from learned_optim.functional import chunked_update, reference_update
from learned_optim.meta.tasks.registry import DEFAULTS, make_task
from learned_optim.meta.tasks import seeded
from learned_optim.meta.estimators import ESTIMATORS
from learned_optim.meta.truncated import Recipe, Unroller
from learned_optim.preprocessing import PREPROCESSINGS

import _report as report  # benchmarks/_report.py, beside this script


class Rule(nn.Module):
    """Another implementation of ``network``'s update rule, with its parameters and initial state."""

    def __init__(self, network: CoordinatewiseLSTM) -> None:
        super().__init__()
        self.network = network

    def initial_state(self, n, dtype=torch.float32, device=None):
        return self.network.initial_state(n, dtype, device)

    def initial_moments(self, n, device=None):
        return self.network.initial_moments(n, device)


class StraightforwardLSTM(Rule):
    """The same network, written the obvious way: nn.LSTMCell per layer, state as one stacked tensor."""

    def forward(self, grad, state):
        net = self.network
        x = PREPROCESSINGS[net.preprocessing].function(grad, net.p)
        new_state = []
        for layer, cell in enumerate(net.cells):
            h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
            new_state += [h, c]
            x = h
        return net.head(x).squeeze(1) * net.output_scale, torch.stack(new_state)


class ChunkedForward(Rule):
    """The rule as validation rollouts ran it before: the chunked differentiable step, under no_grad."""

    def forward(self, grad, state):
        return chunked_update(self.network.fused_weights(), grad, state)


def rollout_steps_per_second(rule: nn.Module, task, problems: int, repeats: int, horizon: int) -> float:
    """Median over ``repeats`` (after one warm-up) of optimizee-steps per second of validation rollouts."""
    times = []
    for repeat in range(repeats + 1):
        batch = task.sample_many([seeded(k) for k in range(problems)])
        started = time.perf_counter()
        Unroller(rule, batch).rollout(horizon)
        times.append(time.perf_counter() - started)
    return problems * horizon / statistics.median(times[1:])


def optimizee_steps_per_second(rule: nn.Module, task, meta_batch: int, episodes: int, horizon: int,
                               estimator: str = "bptt") -> float:
    """Median over ``episodes`` meta-batches (after one warm-up) of optimizee-steps per second (PES steps two
    particles per problem, and both count)."""
    meta_optimizer = torch.optim.Adam(rule.parameters(), lr=1e-3)
    recipe = Recipe(horizon=horizon, estimator=estimator)
    particles = 2 if estimator == "pes" else 1
    times = []
    for episode in range(episodes + 1):
        generators = [seeded(1000 * episode + k) for k in range(meta_batch)]
        problems = task.sample_many(generators)
        started = time.perf_counter()
        ESTIMATORS[estimator](rule, meta_optimizer, problems, recipe, generators=generators)
        times.append(time.perf_counter() - started)
    return particles * meta_batch * horizon / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=2, help="timed meta-batches per row (default: 2)")
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[8], help="K of the batched rows (default: 8)")
    parser.add_argument("--horizon", type=int, default=100, help="optimizee steps per episode (default: 100)")
    parser.add_argument("--device", default="cpu", help="where to run (default: cpu)")
    args = report.parse_args(parser)
    task = make_task(DEFAULTS["mnist"]["task"], device=args.device)
    torch.manual_seed(0)
    network = CoordinatewiseLSTM(**DEFAULTS["mnist"]["network"]).to(args.device)
    measure = lambda rule, k, estimator="bptt": optimizee_steps_per_second(  # noqa: E731
        rule, task, k, args.episodes, args.horizon, estimator)
    results = {"straightforward (nn.LSTMCell), 1 optimizee": measure(StraightforwardLSTM(network), 1)}
    with mock.patch("learned_optim.network.chunked_update",
                    lambda weights, grad, state: reference_update(weights, grad, state)):
        results["previous engine (autograd LSTM), 1 optimizee"] = measure(network, 1)
    results["learned_optim, 1 optimizee"] = measure(network, 1)
    for k in args.meta_batch:
        results[f"learned_optim, meta-batch of {k}"] = measure(network, k)
    from learned_optim.meta.train import describe_hardware

    print(f"{describe_hardware(args.device)}; horizon {args.horizon}, unroll 20")
    print_rates(results, "previous engine (autograd LSTM), 1 optimizee", "x previous engine",
                extra=("s / 100-step episode per optimizee", lambda rate: f"{100 / rate:.2f}"))

    k = args.meta_batch[0]
    rollout = lambda rule: rollout_steps_per_second(rule, task, k, args.episodes, args.horizon)  # noqa: E731
    rollouts = {"chunked differentiable forward (before)": rollout(ChunkedForward(network))}
    with mock.patch.dict("os.environ", {kernel.ENV_VAR: "0"}):
        rollouts["no-grad step, PyTorch path"] = rollout(network)
    rollouts["no-grad step, fused kernel" if kernel.available() else "no-grad step (no kernel here)"] = rollout(network)
    print(f"\nvalidation rollouts, {k} problems at once, no meta-graph")
    print_rates(rollouts, "chunked differentiable forward (before)", "x before")

    estimators = {f"truncated BPTT, meta-batch of {k}": results[f"learned_optim, meta-batch of {k}"],
                  f"PES, {k} antithetic pairs": measure(network, k, "pes")}
    print(f"\ngradient estimators, {k} problems per episode (PES: two particles each, forward passes of the rule)")
    print_rates(estimators, f"truncated BPTT, meta-batch of {k}", "x truncated BPTT")


def print_rates(rates: dict[str, float], reference: str, ratio_header: str, extra=None) -> None:
    """A markdown table of optimizee-steps per second, each against ``rates[reference]`` (measured in this run);
    ``extra``: another column, as (header, rate -> cell)."""
    headers = ["implementation", "optimizee-steps / s", *([extra[0]] if extra else []), ratio_header]
    print("| " + " | ".join(headers) + " |")
    print("|---" * len(headers) + "|")
    for name, rate in rates.items():
        cells = [name, f"{rate:.1f}", *([extra[1](rate)] if extra else []), f"{rate / rates[reference]:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    report.run(main)
