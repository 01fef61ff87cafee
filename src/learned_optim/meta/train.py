"""The meta-training loop: seeded episodes of truncated BPTT, validation, checkpoints, resume.

A run lives in one folder:

* ``run.json``: everything needed to repeat it (task, network config, recipe, seed, schedule);
* ``log.jsonl``: one JSON line per episode (meta-loss, final loss, skipped meta-steps) and per
  validation (mean loss over the horizon on fixed held-out problems);
* ``checkpoint.pt``: network, meta-optimizer, best network so far, elapsed time; written
  atomically after every episode and loaded with ``weights_only=True`` on ``resume``;
* ``best/``: the best network by validation loss, as a checkpoint folder (``save_pretrained``).

Episode ``e`` optimizes the problem drawn with seed ``(seed, e)``, so a resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import pretrained
from ..network import CoordinatewiseLSTM
from ..optimizer import LearnedOptimizer
from .atomic import write_file_atomic, write_folder_atomic
from .evaluation import METRICS, run_optimizer
from .registry import make_task
from .tasks import Task, seeded
from .truncated import Recipe, train_episode

VALIDATION_METRICS = {"mean": lambda losses: METRICS["sum"](losses) / len(losses), "final": METRICS["final"]}
"""Validation criteria: mean loss over the horizon (the meta-objective) or mean of the last 10 steps."""
VALIDATION_SEED = 1_000_000_007
"""Validation problem ``i`` is drawn with seed ``VALIDATION_SEED + i`` (disjoint from training seeds)."""


@dataclass
class RunConfig:
    """A meta-training run.

    Args:
        task (dict): task spec for :func:`~learned_optim.meta.registry.make_task`.
        network (dict): :class:`~learned_optim.CoordinatewiseLSTM` config.
        recipe (Recipe): truncated-BPTT hyperparameters.
        episodes (int): episodes to train.
        seed (int): seeds the network's initialisation and every episode's problem.
        validate_every (int): episodes between validations.
        num_validation (int): fixed held-out validation problems.
        validation_metric (str): what selects the best network: ``"mean"`` loss over the horizon
            (the meta-objective) or ``"final"`` loss (mean of the last 10 steps).
        meta_lr_schedule (str): ``"constant"``, or ``"cosine"`` decay from ``meta_lr`` to a tenth of
            it over the run (a function of the episode index, so resuming keeps it exact).
        init (str | None): start from this checkpoint (a bundled name, a folder or a Hub repo id; its
            config must equal ``network``) instead of a fresh initialisation: fine-tuning.
    """

    task: dict[str, Any] = field(default_factory=lambda: {"name": "quadratic", "num_functions": 32})
    network: dict[str, Any] = field(
        default_factory=lambda: {"hidden_size": 20, "num_layers": 2, "preprocessing": "none", "output_scale": 1.0}
    )
    recipe: Recipe = field(default_factory=Recipe)
    episodes: int = 600
    seed: int = 0
    validate_every: int = 50
    num_validation: int = 20
    validation_metric: str = "mean"
    meta_lr_schedule: str = "constant"
    init: str | None = None

    def __post_init__(self) -> None:
        if self.validation_metric not in VALIDATION_METRICS:
            raise ValueError(f"Invalid validation_metric: {self.validation_metric!r}; use one of {list(VALIDATION_METRICS)}")
        if self.meta_lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"Invalid meta_lr_schedule: {self.meta_lr_schedule!r}; use 'constant' or 'cosine'")

    def meta_lr(self, episode: int) -> float:
        """The meta learning rate of ``episode`` under the schedule."""
        if self.meta_lr_schedule == "constant":
            return self.recipe.meta_lr
        return self.recipe.meta_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * episode / self.episodes)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        return cls(**{**data, "recipe": Recipe(**data["recipe"])})


def describe_hardware() -> str:
    """CPU model, cores, torch threads and version: what the model card reports as the hardware."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def episode_generator(seed: int, episode: int) -> torch.Generator:
    return seeded(seed * 2**32 + episode)


def validation_loss(
    network: CoordinatewiseLSTM, task: Task, num_problems: int, horizon: int, metric: str = "mean"
) -> float:
    """``metric`` of the losses over ``horizon`` steps, averaged over ``num_problems`` fixed problems,
    with the network run by ``LearnedOptimizer``."""
    values = [
        VALIDATION_METRICS[metric](
            run_optimizer(task.sample(seeded(VALIDATION_SEED + i)), lambda p: LearnedOptimizer(p, network), horizon).losses
        )
        for i in range(num_problems)
    ]
    return sum(values) / num_problems


class Run:
    """A run folder: its config, log and checkpoint."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.config_path = self.folder / "run.json"
        self.log_path = self.folder / "log.jsonl"
        self.checkpoint_path = self.folder / "checkpoint.pt"
        self.best_path = self.folder / "best"

    @property
    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a run folder (no run.json); start one with 'train'")
        return RunConfig.from_json(json.loads(self.config_path.read_text()))

    def checkpoint(self) -> dict[str, Any]:
        return torch.load(self.checkpoint_path, weights_only=True)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def sessions(self) -> list[dict[str, Any]]:
        """One log entry per (re)start of training: the command and the hardware it ran on."""
        return [entry for entry in self.log() if entry.get("event") == "start"]

    def best_network(self) -> CoordinatewiseLSTM:
        return pretrained.load(self.best_path)


def train(
    config: RunConfig,
    folder: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    compile: bool = False,
    task: Task | None = None,
    validation_task: Task | None = None,
) -> Run:
    """Meta-train as ``config`` says into ``folder``; with ``resume``, continue the run found there.

    ``command`` is logged as the command line that started this session (default: ``sys.argv``).
    ``compile`` runs the network under ``torch.compile`` (faster episodes on large problems after a
    one-off compilation; the weights and checkpoints are the same module's).
    ``task`` (and ``validation_task``, default: ``task``) meta-train on your own task instead of the
    built-in one named by ``config.task``; pass the same objects again to resume.

    Raises:
        FileExistsError: ``folder`` already holds a run and ``resume`` is False.
    """
    run = Run(folder)
    if resume and run.config_path.is_file():
        config = run.config
    elif run.config_path.exists():
        raise FileExistsError(f"{run.folder} already holds a run; pass resume=True (--resume) or use a new folder")
    # Everything that can reject the config happens before anything is written.
    if task is None:
        task, validation_task = make_task(config.task, "train"), make_task(config.task, "validation")
    validation_task = validation_task or task
    torch.manual_seed(config.seed)
    network = CoordinatewiseLSTM(**config.network)
    meta_optimizer = torch.optim.Adam(network.parameters(), lr=config.recipe.meta_lr)

    checkpoint = run.checkpoint() if resume and run.checkpoint_path.is_file() else None
    if checkpoint is None:
        if config.init is not None:  # a resumed run has its weights in the checkpoint instead
            start = pretrained.load(config.init)
            if start.config != network.config:
                raise ValueError(f"init checkpoint {config.init!r} has config {start.config}, but the run's network "
                                 f"is {network.config}; pass the checkpoint's network options")
            network.load_state_dict(start.state_dict())
        run.folder.mkdir(parents=True, exist_ok=True)
        run.config_path.write_text(json.dumps(config.to_json(), indent=2) + "\n")
        run.log_path.write_text("")
        episode, elapsed, best = 0, 0.0, None
    else:  # drop log lines of episodes after the checkpoint: they are run again
        run.log_path.write_text(
            "".join(json.dumps(e) + "\n" for e in run.log() if e["episode"] <= checkpoint["episode"])
        )
        network.load_state_dict(checkpoint["network"])
        meta_optimizer.load_state_dict(checkpoint["meta_optimizer"])
        episode, elapsed, best = checkpoint["episode"], checkpoint["elapsed_s"], checkpoint["best"]

    def validate() -> None:
        nonlocal best
        loss = validation_loss(network, validation_task, config.num_validation, config.recipe.horizon,
                               config.validation_metric)
        _append(run.log_path, {"episode": episode, "validation_loss": loss})
        if best is None or loss < best["validation_loss"]:
            best = {"episode": episode, "validation_loss": loss}  # its weights: the best/ folder
            write_folder_atomic(run.best_path, network.save_pretrained)

    def save() -> None:
        snapshot = {"episode": episode, "elapsed_s": elapsed, "best": best, "network": network.state_dict(),
                    "meta_optimizer": meta_optimizer.state_dict()}
        write_file_atomic(run.checkpoint_path, lambda handle: torch.save(snapshot, handle))

    from tqdm.auto import tqdm

    bar = tqdm(total=config.episodes, initial=episode, disable=not progress, desc="meta-training", unit="ep")
    _append(run.log_path, {"episode": episode, "event": "start", "command": command or " ".join(sys.argv),
                           "hardware": describe_hardware()})
    if episode == 0:
        validate()
        save()
    running = None
    if compile:
        network.compile(dynamic=False)
    while episode < config.episodes:
        for group in meta_optimizer.param_groups:
            group["lr"] = config.meta_lr(episode)
        started = time.perf_counter()
        result = train_episode(network, meta_optimizer, task.sample(episode_generator(config.seed, episode)),
                               config.recipe)
        episode += 1
        elapsed += time.perf_counter() - started
        _append(run.log_path, {"episode": episode, "meta_loss": result["meta_loss"],
                               "final_loss": result["losses"][-1], "skipped": result["skipped"]})
        if episode % config.validate_every == 0 or episode == config.episodes:
            validate()
        save()
        running = result["meta_loss"] if running is None else 0.95 * running + 0.05 * result["meta_loss"]
        bar.set_postfix(meta_loss=f"{running:.4g}", val=f"{best['validation_loss']:.4g}", best_ep=best["episode"])
        bar.update()
    bar.close()
    return run


def _append(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
