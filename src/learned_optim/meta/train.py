"""The meta-training loop: seeded meta-batches, gradient estimators, schedules, validation, checkpoints, resume.

A run lives in one folder:

* ``run.json``: everything needed to repeat it (task, network config, recipe, seed, schedules);
* ``log.jsonl``: one JSON line per episode (estimator, horizon, meta-loss, final loss, skipped
  meta-steps) and per validation (the mean loss over the horizon and the final loss, on fixed
  held-out problems, and their ratio to a tuned baseline's on the same problems where the run has one);
* ``checkpoint.pt``: network, meta-optimizer, curriculum, best network so far, seconds spent in
  episodes (``elapsed_s``) and in validation (``validation_s``);
  written atomically after every episode and loaded with ``weights_only=True`` on ``resume``;
* ``best/``: the best network by validation loss, as a checkpoint folder (``config.json`` and
  ``model.safetensors``, no model card).

Problem ``k`` of episode ``e`` is drawn with a seed of ``(seed, e, k)`` alone, so a resumed run ends
with the same weights as an uninterrupted one, and a run split over processes by ``torchrun``
(:mod:`~learned_optim.meta.distributed`) with the same weights as a single process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import pretrained
from ..network import CoordinatewiseLSTM
from .atomic import write_file_atomic, write_folder_atomic
from .distributed import Distribution, from_environment
from .estimators import ESTIMATORS
from .evaluation import BASELINES, LR_GRID, lr_scores
from .tasks.families import SampledArchitectureTask
from .metrics import METRICS
from .tasks.registry import DEFAULTS, make_task
from .schedules import META_LR_SCHEDULES, HorizonCurriculum, meta_lr
from .tasks import Task, seeded
from .truncated import BatchLayout, Recipe, Unroller, random_scales, unroll_memory

VALIDATION_METRICS = {"mean": lambda losses: METRICS["sum"](losses) / len(losses), "final": METRICS["final"],
                      "final_geomean": lambda losses: math.log(METRICS["final"](losses) or math.ulp(0))}
"""Validation criteria, a score per problem averaged over the problems (:func:`averaged`): mean loss over the
horizon, evaluation's ``final`` (the mean of the last :data:`~learned_optim.meta.metrics.FINAL_STEPS` steps), or
``final``'s geometric mean over the problems (the score is its log), for families whose problems' losses differ by
orders of magnitude (neural art's styles)."""
VALIDATION_SEED = 1_000_000_007
"""Validation problem ``i`` is drawn with seed ``VALIDATION_SEED + i`` (disjoint from training seeds)."""
VALIDATION_CHUNK = 25
"""Validation problems run together, at most."""
MEMORY_SHARE = 0.9
"""The most of the memory available at the start that the graph of one unroll may take."""
STALL_EPISODES = 100
"""A run whose best validation loss is still within 2% of its initial one after this many episodes gets a warning."""


def sonnet_init_(network: CoordinatewiseLSTM) -> CoordinatewiseLSTM:
    """Sonnet's LSTM defaults, which the paper's authors used: gate biases zero but the forget gate's +1,
    and a zero output bias (PyTorch's default output bias moves every coordinate even at zero gradient)."""
    with torch.no_grad():
        for cell in network.cells:
            hidden = cell.hidden_size
            cell.bias_ih.zero_()
            cell.bias_hh.zero_()
            cell.bias_ih[hidden:2 * hidden] = 1.0  # nn.LSTMCell's gate order: input, forget, cell, output
        network.head.bias.zero_()
    return network


NETWORK_INITS: dict[str, Callable[[CoordinatewiseLSTM], CoordinatewiseLSTM]] = {
    "pytorch": lambda network: network,
    "sonnet": sonnet_init_,
}
"""How a fresh network is initialised: PyTorch's ``nn.LSTMCell``/``nn.Linear`` defaults, or Sonnet's biases."""


@dataclass
class RunConfig:
    """A meta-training run.

    Args:
        task (dict): task spec for :func:`~learned_optim.meta.tasks.registry.make_task`.
        network (dict): :class:`~learned_optim.CoordinatewiseLSTM` config.
        recipe (Recipe): truncated-BPTT hyperparameters.
        episodes (int): episodes (meta-batches) to train.
        seed (int): seeds the network's initialisation and every episode's problems.
        validate_every (int): episodes between validations.
        num_validation (int): fixed held-out validation problems (the same for every validation).
        validation_metric (str): what selects the best network: ``"mean"`` loss over the horizon
            (the meta-objective) or ``"final"`` loss (mean of the last 10 steps).
        meta_lr_schedule (str): ``"constant"``, or ``"cosine"`` decay from ``meta_lr`` to a tenth of
            it over the run (a function of the episode index, so resuming keeps it exact).
        meta_lr_warmup (int): episodes of linear meta-lr warm-up (default: 0).
        init (str | None): start from this checkpoint (a bundled name, a folder or a Hub repo id; its
            config must equal ``network``) instead of a fresh initialisation: fine-tuning.
        init_step_scale (float): the ``init`` checkpoint's step multiplied by this
            (:meth:`~learned_optim.CoordinatewiseLSTM.with_step_scale`; ``network`` then has the scaled
            ``output_scale`` and ``nominal``): fine-tuning from a step size chosen on validation (default: 1).
        network_init (str): how a fresh network is initialised, a key of :data:`NETWORK_INITS`.
        curriculum (list[int] | None): horizons of a :class:`~learned_optim.meta.schedules.HorizonCurriculum`
            (default: None, always ``recipe.horizon``).
        curriculum_patience (int): validations without improvement before the next stage.
        budget_s (float | None): wall-clock seconds for episodes and validation together: after the second episode,
            ``episodes`` is sized to the episodes that fit (at most the given number) and recorded in ``run.json``
            (default: None, ``episodes`` as given).
        validation_baseline (str | None): a key of :data:`~learned_optim.meta.evaluation.BASELINES` whose learning
            rate is tuned on the validation problems at the start; every validation then reports the network's
            loss as a ratio to its loss on the same problems (default: None).
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
    meta_lr_warmup: int = 0
    init: str | None = None
    init_step_scale: float = 1.0
    network_init: str = "pytorch"
    curriculum: list[int] | None = None
    curriculum_patience: int = 2
    budget_s: float | None = None
    validation_baseline: str | None = None

    def __post_init__(self) -> None:
        if self.validation_metric not in VALIDATION_METRICS:
            raise ValueError(f"Invalid validation_metric: {self.validation_metric!r}; "
                             f"use one of {list(VALIDATION_METRICS)}")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            raise ValueError(f"Invalid meta_lr_schedule: {self.meta_lr_schedule!r}; "
                             f"use one of {list(META_LR_SCHEDULES)}")
        if self.network_init not in NETWORK_INITS:
            raise ValueError(f"Invalid network_init: {self.network_init!r}; use one of {list(NETWORK_INITS)}")
        if self.meta_lr_warmup < 0:
            raise ValueError(f"Invalid meta_lr_warmup: {self.meta_lr_warmup}; it must be >= 0")
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise ValueError(f"Invalid budget_s: {self.budget_s}; it must be a positive number of seconds")
        if self.validation_baseline is not None and self.validation_baseline not in BASELINES:
            raise ValueError(f"Invalid validation_baseline: {self.validation_baseline!r}; use one of "
                             f"{list(BASELINES)} or None")
        if not (math.isfinite(self.init_step_scale) and self.init_step_scale > 0):
            raise ValueError(f"Invalid init_step_scale: {self.init_step_scale}; it must be finite and > 0")
        if self.init_step_scale != 1 and self.init is None:
            raise ValueError(f"init_step_scale {self.init_step_scale} scales the init checkpoint's step, but there is "
                             "no init; give the checkpoint to start from")
        for horizon in self.make_curriculum().stages:  # validates the stages and each stage's recipe
            dataclasses.replace(self.recipe, horizon=horizon)

    @property
    def step_scaled(self) -> str:
        """`` with its step scaled by S`` when ``init_step_scale`` is not 1, else ``""``: how errors and model cards
        name the start of a fine-tune."""
        return f" with its step scaled by {self.init_step_scale}" if self.init_step_scale != 1 else ""

    def meta_lr(self, episode: int) -> float:
        """The meta learning rate of ``episode`` under the schedule."""
        return meta_lr(self.recipe.meta_lr, episode, self.episodes, self.meta_lr_schedule, self.meta_lr_warmup)

    def make_curriculum(self) -> HorizonCurriculum:
        """The horizon curriculum of this run (one stage at the recipe's horizon without ``curriculum``)."""
        return HorizonCurriculum(self.curriculum or [self.recipe.horizon], self.curriculum_patience)

    def to_json(self) -> dict[str, Any]:
        """The config as ``run.json`` stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, task: dict[str, Any], options: dict[str, Any],
                     network: dict[str, Any] | None = None) -> "RunConfig":
        """A run of ``task``, ``options`` holding :class:`Recipe` and :class:`RunConfig` fields alike (a task family's
        training defaults with what the user gave), its network the ``init`` checkpoint's (its step scaled by
        ``init_step_scale``) when it fine-tunes one, else the task family's
        (:data:`~learned_optim.meta.tasks.registry.DEFAULTS`), with the options given in ``network`` changed (a
        fine-tune may add step-scale control, a nominal term and progress inputs)."""
        recipe_keys = {f.name for f in dataclasses.fields(Recipe)}
        config = cls(task=task, network=dict(network or {}),
                     recipe=Recipe(**{k: v for k, v in options.items() if k in recipe_keys}),
                     **{k: v for k, v in options.items() if k not in recipe_keys})
        base = (pretrained.load(config.init).with_step_scale(config.init_step_scale).config if config.init is not None
                else DEFAULTS[task["name"]]["network"])
        return dataclasses.replace(config, network={**base, **config.network})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        """The config ``run.json`` stored (:meth:`to_json`)."""
        return cls(**{**data, "recipe": Recipe(**data["recipe"])})


def describe_hardware(device: torch.device | str = "cpu", world_size: int = 1) -> str:
    """CPU (or GPU) model, cores, torch threads, processes and version: what the model card reports."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    if torch.device(device).type == "cuda":
        model = f"{torch.cuda.get_device_name(device)} (host: {model})"
    processes = f", {world_size} processes" if world_size > 1 else ""
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{processes}, "
            f"torch {torch.__version__}")


def problem_generator(seed: int, episode: int, index: int = 0) -> torch.Generator:
    """The generator of problem ``index`` of ``episode`` (index 0 keeps the seeds of single-problem runs)."""
    return seeded((seed * 2**32 + episode) ^ (index * 0x9E3779B97F4A7C15 % 2**63))


def is_imitation_episode(config: RunConfig, episode: int) -> bool:
    """Whether ``episode`` imitates Adam: a fixed draw of the run's seed, the same on every process."""
    draw = torch.rand((), generator=seeded(config.seed * 2**32 + episode + 0x1A17A7E))
    return bool(draw < config.recipe.imitation)


def episode_horizon(config: RunConfig, episode: int, horizon: int) -> tuple[int, bool]:
    """The horizon of ``episode`` (``horizon``, or with ``recipe.min_horizon`` a log-uniform draw from
    ``[min_horizon, horizon]``) and whether a network with progress inputs is told it (a fraction
    ``1 - recipe.unknown_horizon`` of episodes): fixed draws of the run's seed, the same on every process."""
    recipe = config.recipe
    draws = torch.rand(2, generator=seeded(config.seed * 2**32 + episode + 0x40B1205), dtype=torch.float64)
    if recipe.min_horizon is not None:
        low, high = math.log(min(recipe.min_horizon, horizon)), math.log(horizon + 1)
        horizon = min(horizon, int(math.exp(low + (high - low) * float(draws[0]))))
    return horizon, bool(draws[1] >= recipe.unknown_horizon)


def validation_losses(network: nn.Module, task: Task, indices: range | list[int], horizon: int) -> list[list[float]]:
    """Loss curves (``horizon`` losses each, as ``run_optimizer`` measures them) of validation problems
    ``indices``: the same problems, initial parameters and minibatches for every network."""
    from tqdm.auto import tqdm

    curves = []
    # a meta-batch of a sampled-architecture family shares one architecture: validate each problem on its own
    size = 1 if isinstance(task, SampledArchitectureTask) else VALIDATION_CHUNK
    for start in tqdm(range(0, len(indices), size), desc="validation", unit="chunk", leave=False, disable=None):
        chunk = indices[start:start + size]
        problems = task.sample_many([seeded(VALIDATION_SEED + i) for i in chunk])
        curves += Unroller(network, problems, total_steps=horizon).rollout(horizon).t().tolist()
    return curves


def averaged(metric: str, total: float, count: int) -> float:
    """The validation ``metric`` of ``count`` problems whose scores sum to ``total``: their mean, or for
    ``final_geomean`` the exponential of the mean of logs."""
    return math.exp(total / count) if metric == "final_geomean" else total / count


def validation_loss(network: nn.Module, task: Task, num_problems: int, horizon: int, metric: str = "mean") -> float:
    """``metric`` of the losses over ``horizon`` steps, averaged over ``num_problems`` fixed problems."""
    curves = validation_losses(network, task, range(num_problems), horizon)
    return averaged(metric, sum(VALIDATION_METRICS[metric](curve) for curve in curves), num_problems)


def available_memory(device: torch.device | str) -> int | None:
    """Bytes free on ``device``: a GPU's free memory, or the host's available memory (Linux); None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)


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

    def summary(self) -> dict[str, Any]:
        """What the log says of the run: ``episode`` (the last one trained), ``best`` (``episode`` and
        ``validation_loss`` of the best validation at the last validation horizon, as training keeps ``best/``),
        and the seconds spent in episodes and in validation (``elapsed_s``, ``validation_s``; None where not
        recorded) by the last validation."""
        log = self.log()
        validations = [entry for entry in log if "validation_loss" in entry]
        if not validations:
            raise ValueError(f"{self.folder} has no validation in its log; train it first")
        horizon = validations[-1].get("validation_horizon")
        latest = validations[max((i + 1 for i, v in enumerate(validations) if v.get("validation_horizon") != horizon),
                                 default=0):]
        best = min(latest, key=lambda entry: entry["validation_loss"])  # the first of equal losses, as training keeps
        episodes = [entry["episode"] for entry in log if "meta_loss" in entry]
        return {"episode": max(episodes, default=0),
                "best": {"episode": best["episode"], "validation_loss": best["validation_loss"]},
                "elapsed_s": validations[-1].get("elapsed_s"), "validation_s": validations[-1].get("validation_s")}

    def sessions(self) -> list[dict[str, Any]]:
        """One log entry per (re)start of training: the command and the hardware it ran on."""
        return [entry for entry in self.log() if entry.get("event") == "start"]

    def best_network(self) -> CoordinatewiseLSTM:
        return pretrained.load(self.best_path)


def train(
    config: RunConfig | None,
    folder: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
    task: Task | None = None,
    validation_task: Task | None = None,
    device: torch.device | str = "cpu",
    distribution: Distribution | None = None,
    episodes: int | None = None,
) -> Run:
    """Meta-train as ``config`` says into ``folder``; with ``resume``, continue the run found there.

    A resumed run keeps the config recorded in its ``run.json``: ``config`` may then be None, or must equal the
    recorded one except for ``episodes``, which (like the ``episodes`` argument) extends or shortens the run; a run
    with a budget keeps the size its budget gave it unless the ``episodes`` argument says otherwise.
    With ``resume`` and no run in ``folder``, ``config`` starts one. ``command`` is logged as the command line that
    started this session (default: ``sys.argv``). ``task`` (and ``validation_task``, default: ``task``) meta-train
    on your own task instead of the built-in one named by ``config.task``; pass the same objects again to resume.
    ``device`` is where the network and the problems live; ``distribution`` the process group (default: the one
    ``torchrun`` set up, or a single process).

    Raises:
        FileExistsError: ``folder`` already holds a run and ``resume`` is False.
        ValueError: ``config`` is None with no run to resume, or differs from the run's recorded config.
    """
    run = Run(folder)
    if resume and run.config_path.is_file():
        recorded = run.config
        if config is not None and dataclasses.replace(config, episodes=recorded.episodes) != recorded:
            raise ValueError(f"{run.folder} holds a run with another config ({run.config_path}); resume it with "
                             "config=None or the same config, or start the new one in another folder")
        sized = recorded.budget_s is not None  # sized by its budget: a config's episodes were only the most it may take
        given = recorded if sized or config is None else config
        config = dataclasses.replace(recorded, episodes=episodes or given.episodes)
    elif run.config_path.exists():
        raise FileExistsError(f"{run.folder} already holds a run; pass resume=True (--resume) or use a new folder")
    elif config is None:
        raise ValueError(f"{run.folder} holds no run to resume; give the RunConfig of a new one")
    trainer = Trainer(config, run, distribution or from_environment(device), device, task, validation_task)
    trainer.restore(run.checkpoint() if resume and run.checkpoint_path.is_file() else None)
    trainer.fit(progress, command)
    return run


class Trainer:
    """One run's meta-training: the network, its meta-optimizer and curriculum, and where the run stands (episode,
    seconds spent, best validation so far), with a method for each thing the loop does."""

    def __init__(self, config: RunConfig, run: Run, dist: Distribution, device: torch.device | str,
                 task: Task | None = None, validation_task: Task | None = None) -> None:
        if config.recipe.meta_batch < dist.world_size:
            raise ValueError(f"meta_batch {config.recipe.meta_batch} is smaller than the {dist.world_size} "
                             "processes; give every process at least one problem")
        # Everything that can reject the config happens before anything is written.
        if task is None:
            task = make_task(config.task, "train", device=device)
            validation_task = make_task(config.task, "validation", device=device)
        self.config, self.run, self.dist, self.device = config, run, dist, device
        self.task, self.validation_task = task, validation_task or task
        torch.manual_seed(config.seed)
        self.network = NETWORK_INITS[config.network_init](CoordinatewiseLSTM(**config.network)).to(device)
        self.meta_optimizer = torch.optim.Adam(self.network.parameters(), lr=config.recipe.meta_lr)
        self.curriculum = config.make_curriculum()
        self.episode, self.elapsed, self.validation_s = 0, 0.0, 0.0
        self.best: dict[str, Any] | None = None
        self.baseline: dict[str, Any] | None = None  # the tuned baseline's validation results
        self.last_validation_s = 0.0
        self.report_lines = False  # one line per validation instead of a progress bar (set by fit)
        self.check_memory()

    def check_memory(self) -> None:
        """Refuse, naming the fix, a recipe whose backpropagation through one unroll would take more than
        :data:`MEMORY_SHARE` of the memory available (measured on two steps of this process's first problems, by
        :func:`~learned_optim.meta.truncated.unroll_memory`), instead of running out of memory mid-run."""
        config, recipe = self.config, self.config.recipe
        available = available_memory(self.device)
        if (recipe.estimator != "bptt" and not recipe.imitation) or available is None:
            return  # PES runs forward passes only
        shard = self.dist.shard(recipe.meta_batch)
        longest = dataclasses.replace(recipe, horizon=max(self.curriculum.stages))
        # whatever a task's sampler draws from torch's generators, the run's random numbers stay as they were
        with torch.random.fork_rng(devices=[] if torch.device(self.device).type == "cpu" else None):
            problems = self.task.sample_many([problem_generator(config.seed, 0, k) for k in shard])
            needed = unroll_memory(self.network, problems, longest)
        if needed > MEMORY_SHARE * available:
            per_problem = needed / len(shard)
            fits = int(MEMORY_SHARE * available // per_problem) * self.dist.world_size
            raise ValueError(
                f"meta-training would keep about {needed / 2**30:.1f} GB for backpropagation through each unroll "
                f"({min(recipe.unroll, longest.horizon)} steps of {len(shard)} problems, {per_problem / 2**30:.2f} GB "
                f"each) and {available / 2**30:.1f} GB are available: lower the meta-batch (--meta-batch "
                f"{max(fits, 1)} or fewer{'' if fits else ', and the unroll'}) or the unroll (--unroll), or use "
                "--estimator pes, which keeps no graph")

    def restore(self, checkpoint: dict[str, Any] | None) -> None:
        """Start the run folder (from ``config.init`` if given), or continue from ``checkpoint``."""
        config, run = self.config, self.run
        self.dist.barrier()  # every process has read the folder before rank 0 writes to it
        if checkpoint is None:
            if config.init is not None:
                start = pretrained.load(config.init).with_step_scale(config.init_step_scale)
                if self.network.progress and not start.progress:
                    start = start.with_progress()  # zero weights on the new inputs: the same rule to start from
                weights_config = {**start.config, "scale_rate": self.network.scale_rate,  # control is no weight,
                                  "nominal": start.nominal or self.network.nominal}  # nor a nominal term added
                if CoordinatewiseLSTM(**weights_config).config != self.network.config:
                    raise ValueError(f"init checkpoint {config.init!r}{config.step_scaled} has config {start.config}, "
                                     f"but the run's network is {self.network.config}; leave out the network options "
                                     "that differ from the checkpoint's (a fine-tune may add step-scale control, "
                                     "--scale-rate, a nominal term, --nominal, and progress inputs, --progress)")
                self.network.load_state_dict(start.state_dict())
            if self.dist.is_main:
                run.folder.mkdir(parents=True, exist_ok=True)
                run.config_path.write_text(json.dumps(config.to_json(), indent=2) + "\n")
                run.log_path.write_text("")
            return
        if self.dist.is_main:  # drop log lines of episodes after the checkpoint: they are run again
            run.config_path.write_text(json.dumps(config.to_json(), indent=2) + "\n")
            run.log_path.write_text(
                "".join(json.dumps(e) + "\n" for e in run.log() if e["episode"] <= checkpoint["episode"]))
        self.network.load_state_dict(checkpoint["network"])
        self.meta_optimizer.load_state_dict(checkpoint["meta_optimizer"])
        self.curriculum.load_state_dict(checkpoint.get("curriculum", self.curriculum.state_dict()))
        self.episode, self.elapsed, self.best = checkpoint["episode"], checkpoint["elapsed_s"], checkpoint["best"]
        self.baseline = checkpoint.get("baseline")
        self.validation_s = checkpoint.get("validation_s")  # None: a run from before validation was timed

    def fit(self, progress: bool = True, command: str | None = None) -> None:
        """Episodes until ``config.episodes``, validating every ``validate_every`` and checkpointing after each."""
        from tqdm.auto import tqdm

        config, dist, recipe = self.config, self.dist, self.config.recipe
        if progress and dist.is_main:
            print(f"meta-training on {json.dumps(config.task)} into {self.run.folder}/: "
                  f"episodes {self.episode + 1}-{config.episodes} of {recipe.meta_batch} optimizee(s), horizon "
                  f"{self.curriculum.horizon}, unroll {recipe.unroll}, on {self.device}"
                  f"{f' x {dist.world_size} processes' if dist.world_size > 1 else ''}; validation on "
                  f"{config.num_validation} problems every {config.validate_every} episodes (the bar gives the time "
                  "left)", flush=True)
        terminal = sys.stderr.isatty()  # a bar on a terminal; in a redirected log, one line per validation
        self.report_lines = progress and dist.is_main and not terminal
        bar = tqdm(total=config.episodes, initial=self.episode, disable=not (progress and dist.is_main and terminal),
                   desc="meta-training", unit="ep")
        self.log({"episode": self.episode, "event": "start", "command": command or " ".join(sys.argv),
                  "hardware": describe_hardware(self.device, dist.world_size)})
        if self.episode == 0:
            self.validate()
            self.save()
        running = None
        while self.episode < config.episodes:
            before = self.elapsed
            name, result = self.train_episode()
            if self.episode == 2 and config.budget_s is not None:  # timed on the second: the first warms up
                self.size_to_budget(self.elapsed - before)
                config = self.config
                bar.total = config.episodes
            if self.episode % config.validate_every == 0 or self.episode == config.episodes:
                self.validate()
            self.save()
            if name != "imitation":
                running = result["meta_loss"] if running is None else 0.95 * running + 0.05 * result["meta_loss"]
            bar.set_postfix(meta_loss=f"{float('nan') if running is None else running:.4g}",
                            val=f"{self.best['validation_loss']:.4g}", best_ep=self.best["episode"],
                            horizon=self.curriculum.horizon,
                            **({f"vs_{self.baseline['name']}": f"{self.ratio(self.best['validation_loss']):.3g}x"}
                               if self.baseline else {}))
            bar.update()
        bar.close()
        dist.barrier()
        if progress and dist.is_main:
            print(f"meta-training done: best validation loss {self.best['validation_loss']:.4g} at episode "
                  f"{self.best['episode']}; the network is in {self.run.best_path}/, the log in {self.run.log_path}",
                  flush=True)

    def size_to_budget(self, episode_s: float) -> None:
        """After the second episode, which took ``episode_s`` (the first warms up): as many episodes as fit
        ``budget_s`` with their validations (at most the config's), timed on the main process and recorded in
        ``run.json``."""
        config = self.config
        spent, per_validation = self.elapsed + (self.validation_s or 0.0), self.last_validation_s
        per_episode = episode_s + per_validation / config.validate_every
        fits = self.episode + max(0, int((config.budget_s - spent - per_validation) / per_episode))
        episodes = self.dist.broadcast_object(min(config.episodes, fits))
        self.config = dataclasses.replace(config, episodes=episodes)
        self.log({"episode": self.episode, "event": "budget", "budget_s": config.budget_s, "episodes": episodes,
                  "episode_s": episode_s, "one_validation_s": per_validation})
        if self.dist.is_main:
            self.run.config_path.write_text(json.dumps(self.config.to_json(), indent=2) + "\n")

    def tune_baseline(self) -> None:
        """The baseline's learning rate tuned over :data:`~learned_optim.meta.evaluation.LR_GRID` on the
        validation problems, at the validation horizon, by the validation metric; its results logged."""
        config, dist = self.config, self.dist
        started = time.perf_counter()
        horizon = self.curriculum.validation_horizon
        problems = [self.validation_task.sample(seeded(VALIDATION_SEED + i))  # validation_losses' problems
                    for i in dist.shard(config.num_validation)]
        scores = torch.zeros(len(LR_GRID), len(VALIDATION_METRICS), dtype=torch.float64)
        if problems:  # a process without validation problems adds nothing
            means = lr_scores(BASELINES[config.validation_baseline], problems, horizon, VALIDATION_METRICS)
            scores = torch.tensor([[means[metric][lr] * len(problems) for metric in VALIDATION_METRICS]
                                   for lr in LR_GRID], dtype=torch.float64)
        dist.all_reduce(scores)  # this process's share of the sums, summed over the processes
        best = int(scores[:, list(VALIDATION_METRICS).index(config.validation_metric)].argmin())
        self.baseline = {"name": config.validation_baseline, "lr": LR_GRID[best], "validation_horizon": horizon,
                         **{f"validation_{metric}": averaged(metric, total, config.num_validation)
                            for metric, total in zip(VALIDATION_METRICS, scores[best].tolist())}}
        self.validation_s = (self.validation_s or 0.0) + time.perf_counter() - started
        self.log({"episode": self.episode, "event": "baseline", **self.baseline})

    def ratio(self, loss: float) -> float:
        """A validation loss over the tuned baseline's on the same problems."""
        return loss / self.baseline[f"validation_{self.config.validation_metric}"]

    def train_episode(self) -> tuple[str, dict]:
        """One episode of this process's share of the meta-batch; returns the estimator's name and result."""
        config, recipe = self.config, self.config.recipe
        for group in self.meta_optimizer.param_groups:
            group["lr"] = config.meta_lr(self.episode)
        started = time.perf_counter()
        generators = [problem_generator(config.seed, self.episode, k) for k in self.dist.shard(recipe.meta_batch)]
        problems = self.task.sample_many(generators)
        scale = random_scales(BatchLayout(problems.params), recipe.random_scale, generators, recipe.random_scale_per)
        name = "imitation" if is_imitation_episode(config, self.episode) else recipe.estimator
        horizon, told = episode_horizon(config, self.episode, self.curriculum.horizon)
        result = ESTIMATORS[name](self.network, self.meta_optimizer, problems,
                                  dataclasses.replace(recipe, horizon=horizon, min_horizon=None),
                                  scale.to(self.device) if scale is not None else None, recipe.meta_batch,
                                  self.dist.all_reduce, generators, told)
        self.episode += 1
        self.elapsed += time.perf_counter() - started
        self.log({"episode": self.episode, "estimator": name, "horizon": horizon,
                  **({} if told else {"told_horizon": False}), "meta_loss": result["meta_loss"],
                  "final_loss": result["losses"][-1], "skipped": result["skipped"]})
        return name, result

    def validate(self) -> None:
        """Both validation metrics on the fixed held-out problems; a better network becomes ``best/``."""
        config, dist, run = self.config, self.dist, self.run
        horizon = self.curriculum.validation_horizon
        if config.validation_baseline is not None and (self.baseline or {}).get("validation_horizon") != horizon:
            self.tune_baseline()  # at the start, and again at each new validation horizon of a curriculum
        started = time.perf_counter()
        curves = validation_losses(self.network, self.validation_task, dist.shard(config.num_validation), horizon)
        sums = torch.tensor([[VALIDATION_METRICS[m](c) for m in VALIDATION_METRICS] for c in curves] or
                            [[0.0] * len(VALIDATION_METRICS)], dtype=torch.float64).sum(0)
        dist.all_reduce(sums)
        values = {metric: averaged(metric, total, config.num_validation)
                  for metric, total in zip(VALIDATION_METRICS, sums.tolist())}
        loss = values[config.validation_metric]
        self.last_validation_s = time.perf_counter() - started
        if self.validation_s is not None:
            self.validation_s += self.last_validation_s
        self.log({"episode": self.episode, "validation_loss": loss,
                  **{f"validation_{metric}": value for metric, value in values.items()},
                  "validation_horizon": horizon, "elapsed_s": self.elapsed,
                  "validation_s": self.validation_s,
                  **({"baseline_ratio": self.ratio(loss)} if self.baseline else {})})
        best = self.best
        if best is None or best["horizon"] != horizon or loss < best["validation_loss"]:
            self.best = {"episode": self.episode, "validation_loss": loss, "horizon": horizon}  # its weights: best/
            if dist.is_main:
                write_folder_atomic(run.best_path, self.network.save_weights)
        if dist.is_main and self.episode >= STALL_EPISODES > self.episode - config.validate_every:
            initial = next(e["validation_loss"] for e in run.log() if "validation_loss" in e)
            if self.best["validation_loss"] >= 0.98 * initial:
                warnings.warn(
                    f"meta-training has not moved validation from its initial {initial:.4g} in {self.episode} "
                    "episodes: the meta learning rate is likely too high (on MNIST such runs stay at ln 10; try "
                    "--meta-lr 1e-3 --meta-lr-warmup 20 --network-init sonnet) or the objective unsuited (--objective "
                    f"log); see {run.log_path}", RuntimeWarning, stacklevel=2)
        if self.report_lines:
            against = f", {self.ratio(loss):.3g}x tuned {self.baseline['name']}'s" if self.baseline else ""
            print(f"episode {self.episode}/{config.episodes}: validation {config.validation_metric} {loss:.4g}"
                  f"{against} (best {self.best['validation_loss']:.4g} at episode {self.best['episode']}), "
                  f"{self.elapsed:.0f} s of episodes", flush=True)
        if self.curriculum.observe(self.episode, loss):
            self.log({"episode": self.episode, "event": "curriculum", "horizon": self.curriculum.horizon,
                      "validation_horizon": self.curriculum.validation_horizon})

    def save(self) -> None:
        """The checkpoint, written atomically (by the main process)."""
        if not self.dist.is_main:
            return
        snapshot = {"episode": self.episode, "elapsed_s": self.elapsed, "validation_s": self.validation_s,
                    "best": self.best, "baseline": self.baseline, "network": self.network.state_dict(),
                    "meta_optimizer": self.meta_optimizer.state_dict(), "curriculum": self.curriculum.state_dict()}
        write_file_atomic(self.run.checkpoint_path, lambda handle: torch.save(snapshot, handle))

    def log(self, entry: dict[str, Any]) -> None:
        """One line of ``log.jsonl`` (by the main process)."""
        if self.dist.is_main:
            _append(self.run.log_path, entry)


def _append(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
