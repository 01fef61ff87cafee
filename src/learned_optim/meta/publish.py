"""Turn a run's best network into a checkpoint folder with a model card, optionally on the Hub."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi

from .train import Run, write_folder_atomic

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
optimizer = LearnedOptimizer(model.parameters(), pretrained="{name}")
```

## Network

A coordinatewise two-layer LSTM optimizer (Andrychowicz et al., 2016, https://arxiv.org/abs/1606.04474),
config `{network}`: {num_params} weights, 80 floats of state per optimized coordinate.

## Meta-training

- Task: `{task}`; data split used for meta-training: {train_split}.
- Recipe (truncated BPTT): `{recipe}`, meta learning rate schedule `{schedule}`; seed {seed}.
- Episodes: {episodes}; the shipped network is the best by validation loss ({validation_metric}
  on {num_validation} fixed held-out problems{validation_split}, every {validate_every} episodes), found at
  episode {best_episode} (validation loss {best_loss:.4g}).
- Meta-training wall-clock: {elapsed:.0f} s ({elapsed_h:.2f} h) on {hardware}.
- Command: `{command}`

## Results

{results}
"""


def model_card(run: Run, name: str, description: str, results: str) -> str:
    """The model card (``README.md``) of a checkpoint published from ``run``."""
    config = run.config
    checkpoint = run.checkpoint()
    sessions = run.sessions()
    network = run.best_network()
    data_backed = config.task.get("name") == "mnist"
    return _CARD.format(
        name=name,
        description=description,
        network=json.dumps(network.config),
        num_params=sum(p.numel() for p in network.parameters()),
        task=json.dumps(config.task),
        train_split="the first 50,000 MNIST training images" if data_backed else "synthetic, fresh problem per episode",
        recipe=json.dumps(config.to_json()["recipe"]),
        seed=config.seed,
        schedule=config.meta_lr_schedule,
        episodes=checkpoint["episode"],
        num_validation=config.num_validation,
        validate_every=config.validate_every,
        validation_metric={"mean": "mean loss over the horizon", "final": "mean loss over the last 10 steps"}[
            config.validation_metric],
        validation_split=" drawn from the last 10,000 MNIST training images" if data_backed else "",
        best_episode=checkpoint["best"]["episode"],
        best_loss=checkpoint["best"]["validation_loss"],
        elapsed=checkpoint["elapsed_s"],
        elapsed_h=checkpoint["elapsed_s"] / 3600,
        hardware="; ".join(sorted({s["hardware"] for s in sessions})) or "unknown",
        command=sessions[0]["command"] if sessions else "unknown",
        results=results or "Not evaluated yet: run `python -m learned_optim.meta evaluate`.",
    )


def publish(
    run_folder: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    description: str | None = None,
    results: str = "",
    figures: list[Path] = (),
    repo_id: str | None = None,
) -> Path:
    """Write the run's best network to ``out`` (weights, config, model card, figures), atomically.

    With ``repo_id``, also upload the folder to the Hugging Face Hub (creating the repo if needed).
    """
    run = Run(run_folder)
    out = Path(out)
    name = name or out.name
    description = description or f"Coordinatewise LSTM optimizer meta-trained on `{run.config.task['name']}`."
    card = model_card(run, name, description, results)

    def fill(folder: Path) -> None:
        run.best_network().save_pretrained(folder)
        (folder / "README.md").write_text(card)
        for figure in figures:
            shutil.copy(figure, folder / Path(figure).name)

    write_folder_atomic(out, fill)
    if repo_id is not None:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=out, repo_id=repo_id, commit_message=f"Publish {name} from learned_optim")
    return out
