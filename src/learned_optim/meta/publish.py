"""Turn a run's best network into a checkpoint folder with a model card, optionally on the Hub."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi

from ..network import CONFIG_KEYS, CoordinatewiseLSTM
from .atomic import write_folder_atomic
from .metrics import FINAL_STEPS
from .tasks.art import FAMILY, HELD_OUT_STYLES
from .train import Run, RunConfig

_CARD = """---
library_name: learned_optim
license: apache-2.0
tags:
- learned-optimizer
- learning-to-learn
- optimizer
---

# {name}

{description}

```python
from learned_optim import LearnedOptimizer
optimizer = LearnedOptimizer(model.parameters(), pretrained="{source}")
```

`pretrained=` takes a bundled name, the path of a folder holding this checkpoint, or its Hugging Face Hub repo id.

## Network

A coordinatewise two-layer LSTM optimizer (Andrychowicz et al., 2016, https://arxiv.org/abs/1606.04474),
config `{network}`: {num_params} weights, {state_floats} floats of state per optimized coordinate.

## Meta-training

{meta_training}

## Results

{results}
{ablation}"""

_ABLATION = """
## Ablation

Validation loss ({metric} on the same {num_validation} held-out `{task}` problems, horizon {horizon}: common random
numbers) of meta-training runs that differ in the settings shown, this checkpoint's run first (run folders in
`meta_runs/`), at the episodes every run validated:

{table}
"""

VALIDATION_METRIC_DESCRIPTIONS = {"mean": "mean loss over the horizon",
                                  "final": f"mean loss over the last {FINAL_STEPS} steps",
                                  "final_geomean": f"geometric mean over the problems of the mean loss over the last "
                                                   f"{FINAL_STEPS} steps"}
"""What each validation metric (``RunConfig.validation_metric``) is, as a model card says it."""
BOOKKEEPING = {"episodes", "validate_every"}
"""Run settings that say how long and how often, not how: left out of an ablation's differences."""


DATA = {
    "mnist": ("the first 50,000 MNIST training images", " drawn from the last 10,000 MNIST training images"),
    "art": ("random crops of the 16 training photos of the art folder (its content photos but the validation and "
            "test ones); features VGG-16 (HED fine-tuned) unless the task names other weights",
            " cropped from the 4 validation photos"),
    "art-family": ("random crops of the 16 training photos of the art folder, each in a style drawn from the training "
                   "styles (a third each: the style folder's images but the held-out ones, i.e. The Starry Night; the "
                   "training photos; generated stripes, checks and noise), cropped and varied in colour; held out "
                   f"from meta-training and selection: {', '.join(HELD_OUT_STYLES)}; features VGG-16 (HED "
                   "fine-tuned) unless the task names other weights",
                   " cropped from the 4 validation photos, each in the style of a crop of one of them or of a "
                   "generated texture"),
    None: ("synthetic, a fresh problem per episode", ""),
}
"""Per task family: the data of meta-training and of validation, as the model card says them."""


def _data_family(task: dict) -> str | None:
    """The key of :data:`DATA` for a task spec: MNIST's for every MNIST task (and mixtures of them)."""
    names = ([c["name"] for c in task.get("components", [])] if task.get("name") == "mixture" else [task.get("name")])
    families = {"mnist" if name and name.startswith("mnist") else name for name in names}
    family = families.pop() if len(families) == 1 else None
    return "art-family" if family == "art" and task.get("style") == FAMILY else family


def lineage(run: Run) -> list[Run]:
    """The runs ``run`` was initialised from (``--init <run>/best``), earliest first, as far as their folders are
    found: a fine-tune's card names every stage that made its network."""
    stages, seen, init = [], {run.folder.resolve()}, run.config.init
    while init and Path(init).name == "best" and (Path(init).parent / "run.json").is_file() \
            and Path(init).parent.resolve() not in seen:
        earlier = Run(Path(init).parent)
        stages.insert(0, earlier)
        seen.add(earlier.folder.resolve())
        init = earlier.config.init
    return stages


def _command(run: Run) -> str:
    sessions = run.sessions()
    return sessions[0]["command"] if sessions else "unknown"


def _hardware(run: Run) -> str:
    return "; ".join(sorted({session["hardware"] for session in run.sessions()})) or "unknown hardware"


ESTIMATOR_NAMES = {"bptt": "truncated BPTT", "pes": "persistent evolution strategies"}


def _recipe(config: RunConfig) -> dict:
    """The recipe as the card shows it: the estimator's options only for PES, the random scale's granularity only
    when per tensor, the horizon's sampling only when used (so the cards of earlier runs read as they did before
    these options)."""
    recipe = config.to_json()["recipe"]
    if recipe["estimator"] == "bptt":
        del recipe["estimator"], recipe["pes_sigma"]
    if recipe["random_scale_per"] == "coordinate":
        del recipe["random_scale_per"]
    if recipe["min_horizon"] is None and recipe["unknown_horizon"] == 0:
        del recipe["min_horizon"], recipe["unknown_horizon"]
    return recipe


def _meta_training(run: Run) -> str:
    """How ``run`` was meta-trained, as model-card bullets."""
    config, summary, stages = run.config, run.summary(), lineage(run)
    start = (f"; initialised from `{config.init}`{config.step_scaled}." if config.init
             else f"; fresh `{config.network_init}` initialisation.")
    training_data, validation_data = DATA.get(_data_family(config.task), DATA[None])
    metric = VALIDATION_METRIC_DESCRIPTIONS[config.validation_metric]
    lines = [
        f"- Task: `{json.dumps(config.task)}`; data used for meta-training: {training_data}.",
        f"- Recipe ({ESTIMATOR_NAMES[config.recipe.estimator]}): `{json.dumps(_recipe(config))}`, meta learning rate "
        "schedule "
        f"`{config.meta_lr_schedule}` with {config.meta_lr_warmup} warm-up episodes; horizon curriculum "
        f"`{config.curriculum or 'none'}`; seed {config.seed}{start}",
        f"- Episodes: {summary['episode']}; the best network by validation loss ({metric} on "
        f"{config.num_validation} fixed held-out problems"
        + validation_data
        + f", every {config.validate_every} episodes) was found at episode {summary['best']['episode']} "
        f"(validation loss {summary['best']['validation_loss']:.4g}).",
        f"- Meta-training wall-clock: {_wall_clock(summary)} on {_hardware(run)}.",
        f"- Command: `{_command(run)}`",
    ]
    if stages:
        summaries = [stage.summary() for stage in stages]
        described = [f"`{stage.folder}` ({c['episode']} episodes, best at {c['best']['episode']}, "
                     f"{_wall_clock(c)} on {_hardware(stage)}): `{_command(stage)}`"
                     for stage, c in zip(stages, summaries)]
        lines.append("- Earlier stages, each next stage starting from the best network of the one before (earliest "
                     f"first): {'; '.join(described)}. "
                     f"Wall-clock of all stages: {_wall_clock(summary, *summaries)}.")
    return "\n".join(lines)


def _wall_clock(*summaries: dict) -> str:
    """The runs' meta-training time (from :meth:`Run.summary`), e.g. ``"1200 s (0.33 h), of which 300 s validation"``;
    runs whose validation was not timed count their episodes only, and the text says so."""
    total = sum(c["elapsed_s"] + (c["validation_s"] or 0.0) for c in summaries)
    validation = sum(c["validation_s"] or 0.0 for c in summaries)
    untimed = sum(c["validation_s"] is None for c in summaries)
    if untimed == len(summaries):
        note = "episodes only (validation not timed)"
    elif untimed:
        note = f"of which {validation:.0f} s validation (not timed in {untimed} of the {len(summaries)} runs)"
    else:
        note = f"of which {validation:.0f} s validation"
    return f"{total:.0f} s ({total / 3600:.2f} h), {note}"


def _settings(run: Run) -> dict[str, object]:
    """The run's settings, flattened (``network.output_scale``, ``recipe.meta_lr``, ...; every network option)."""
    settings = run.config.to_json()
    network = CoordinatewiseLSTM(**settings.pop("network"))
    flat = {f"network.{option}": getattr(network, option) for option in CONFIG_KEYS}
    flat.update({f"recipe.{key}": value for key, value in settings.pop("recipe").items()})
    flat["task"] = json.dumps(settings.pop("task"))
    flat.update({key: value for key, value in settings.items() if key not in BOOKKEEPING})
    return flat


def _validations(run: Run, horizon: int) -> dict[int, float]:
    return {e["episode"]: e["validation_loss"] for e in run.log()
            if "validation_loss" in e and e["validation_horizon"] == horizon}


def ablation(runs: list[Run]) -> str:
    """The model card's ablation section: the runs' validation losses side by side, each run with the settings
    in which it differs from the others. The runs must validate alike (task, problems, metric, horizon)."""
    configs = [run.config for run in runs]
    horizons = [next((e["validation_horizon"] for e in run.log() if "validation_horizon" in e), None) for run in runs]
    alike = {(json.dumps(c.task), c.num_validation, c.validation_metric, h) for c, h in zip(configs, horizons)}
    if len(alike) != 1 or None in horizons:
        raise ValueError("ablation runs must validate alike (the same task, number of validation problems, metric and "
                         f"horizon) to be compared; got (task, problems, metric, horizon) {sorted(alike, key=str)}: "
                         "compare runs meta-trained for the same task and validated the same way")
    settings = [_settings(run) for run in runs]
    differing = sorted(k for k in set().union(*settings) if len({str(s.get(k)) for s in settings}) > 1)
    curves = [_validations(run, horizons[0]) for run in runs]
    episodes = sorted(set.intersection(*(set(curve) for curve in curves)))
    rows = ["| run | differs in | " + " | ".join(f"episode {e}" for e in episodes) + " | best (episode) |",
            "|---" * (len(episodes) + 3) + "|"]
    for run, setting, curve in zip(runs, settings, curves):
        best = min(curve, key=curve.get)
        rows.append(f"| `{run.folder.name}` | " + ", ".join(f"`{k}={setting.get(k)}`" for k in differing)
                    + " | " + " | ".join(f"{curve[e]:.4g}" for e in episodes) + f" | {curve[best]:.4g} ({best}) |")
    metric = VALIDATION_METRIC_DESCRIPTIONS[configs[0].validation_metric]
    return _ABLATION.format(metric=metric, num_validation=configs[0].num_validation, task=configs[0].task["name"],
                            horizon=horizons[0], table="\n".join(rows))


def published_network(run: Run, scale_rate: float | None = None) -> CoordinatewiseLSTM:
    """The run's best network, with step-scale control at ``scale_rate`` when given (bolted on after
    meta-training: :meth:`~learned_optim.CoordinatewiseLSTM.with_scale_rate`)."""
    network = run.best_network()
    return network if scale_rate is None else network.with_scale_rate(scale_rate)


def model_card(run: Run, name: str, description: str, results: str, source: str | None = None,
               compared: list[Run] = (), scale_rate: float | None = None) -> str:
    """The model card (``README.md``) of a checkpoint published from ``run`` (with ``scale_rate``: see
    :func:`published_network`); its usage snippet loads ``source`` (a Hub repo id, a folder path or a bundled name;
    default: ``name``); with ``compared`` runs, an ablation section (:func:`ablation`)."""
    network = published_network(run, scale_rate)
    meta_training = _meta_training(run)
    if scale_rate is not None:
        trained = run.config.network.get("scale_rate", 0.0)
        meta_training += (f"\n- After meta-training: the step-scale control rate (`scale_rate`) set to {scale_rate}; "
                          f"the run's best network was meta-trained with {trained}"
                          f"{' (no control)' if not trained else ''}.")
    return _CARD.format(
        name=name,
        source=source or name,
        description=description,
        network=json.dumps(network.config),
        num_params=sum(p.numel() for p in network.parameters()),
        state_floats=2 * network.num_layers * network.hidden_size + network.num_moments,
        meta_training=meta_training,
        results=results or "Not evaluated yet: run `python -m learned_optim.meta evaluate`.",
        ablation=ablation([run, *compared]) if compared else "",
    )


def publish(
    run_folder: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    description: str | None = None,
    results: str = "",
    figures: list[Path] = (),
    repo_id: str | None = None,
    compared: list[str | os.PathLike] = (),
    scale_rate: float | None = None,
) -> Path:
    """Write the run's best network to ``out`` (weights, config, model card, figures), atomically.

    With ``compared`` run folders, the card gets their ablation table; with ``scale_rate``, the network gets
    step-scale control at that rate (:func:`published_network`; the card says so); with ``repo_id``, the folder is
    also uploaded to the Hugging Face Hub (creating the repo if needed).
    """
    run = Run(run_folder)
    out = Path(out)
    name = name or out.name
    description = description or f"Coordinatewise LSTM optimizer meta-trained on `{run.config.task['name']}`."
    card = model_card(run, name, description, results, repo_id, [Run(folder) for folder in compared], scale_rate)

    def fill(folder: Path) -> None:
        published_network(run, scale_rate).save_pretrained(folder)
        (folder / "README.md").write_text(card)
        for figure in figures:
            shutil.copy(figure, folder / Path(figure).name)

    write_folder_atomic(out, fill)
    if repo_id is not None:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=out, repo_id=repo_id, commit_message=f"Publish {name} from learned_optim")
    return out
