"""Built-in task families by name, with the paper's defaults for each, so runs are plain JSON."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from .art import style_transfer_task
from .families import MixtureTask, MNISTConvNetFamily, MNISTMLPFamily
from .base import Task
from .mnist import mnist_mlp_task, mnist_task
from .modules import paper_convnet
from .synthetic import QuadraticTask, SimpleTask
from .user import load_user_task
from .text import HELD_OUT_LANGUAGE_MODEL, LanguageModelConfig, TextLMFamily, text_lm_task

_MNIST_RECIPE = {
    "network": {"hidden_size": 20, "num_layers": 2, "preprocessing": "log_sign", "p": 10.0, "output_scale": 0.1},
    "training": {"objective": "log", "meta_lr": 1e-3, "meta_lr_warmup": 20, "meta_lr_schedule": "cosine",
                 "network_init": "sonnet", "validation_metric": "final", "num_validation": 50, "validate_every": 25},
    "evaluation": {"steps": 100, "problems": 20, "tuning_problems": 10},
}
"""MNIST's network, training options and protocol, which every MNIST-based family shares."""


def _like_mnist(task: dict[str, Any]) -> dict[str, Any]:
    return {"task": task, **copy.deepcopy(_MNIST_RECIPE)}


DEFAULTS: dict[str, dict[str, Any]] = {
    "quadratic": {
        "task": {"name": "quadratic", "num_functions": 32},
        "network": {"hidden_size": 20, "num_layers": 2, "preprocessing": "none", "p": 10.0, "output_scale": 1.0},
        "evaluation": {"steps": 100, "problems": 100, "tuning_problems": 20},
    },
    "mnist": _like_mnist({"name": "mnist", "hidden_sizes": [20], "activation": "sigmoid"}),
    "art": {
        "task": {"name": "art", "style": "starry_night.jpg", "size": 64},
        "network": {"hidden_size": 20, "num_layers": 2, "preprocessing": "log_sign", "p": 10.0, "output_scale": 0.1},
        "training": {"horizon": 128, "unroll": 32, "objective": "log", "meta_lr": 1e-3, "meta_lr_warmup": 10,
                     "meta_lr_schedule": "cosine", "network_init": "sonnet", "validation_metric": "final",
                     "num_validation": 8, "validate_every": 20, "episodes": 120},
        "evaluation": {"steps": 128, "problems": 24, "tuning_problems": 2, "tuning_split": "validation",
                       "lr_grid": [10 ** (k / 2) for k in range(-6, 2)]},
    },
    "simple": {
        "task": {"name": "simple"},
        "network": {"hidden_size": 20, "num_layers": 2, "preprocessing": "none", "p": 10.0, "output_scale": 1.0},
        "evaluation": {"steps": 100, "problems": 1, "tuning_problems": 1},
    },
    "mnist-convnet": _like_mnist({"name": "mnist-convnet"}),  # the paper's CIFAR ConvNet on MNIST
    "mnist-mlps": _like_mnist({"name": "mnist-mlps"}),  # sampled architectures (families.py)
    "mnist-convnets": _like_mnist({"name": "mnist-convnets"}),
    "mixture": _like_mnist({"name": "mixture", "components": [{"name": "mnist-mlps", "weight": 0.7},
                                                              {"name": "mnist-convnets", "weight": 0.3}]}),
    "text-lm": _like_mnist({"name": "text-lm"}),  # a byte-level Transformer on Python source (text.py)
    "text-lms": _like_mnist({"name": "text-lms"}),  # sampled ones
    "module": {  # the user's own task (train --task-module), fine-tuning l2o-generalist-2
        "task": {"name": "module", "reference": None},
        "training": {"init": "l2o-generalist-2", "objective": "log", "meta_lr": 3e-4, "meta_batch": 8,
                     "meta_lr_warmup": 5, "clip": 1.0,
                     "meta_lr_schedule": "cosine", "validation_metric": "final", "num_validation": 20,
                     "validate_every": 10, "validation_baseline": "Adam"},
        "evaluation": {"steps": 100, "problems": 20, "tuning_problems": 10},
    },
    "user-models": _like_mnist({"name": "user-models", "components": [
        {"name": "mnist-mlps", "depths": [0, 3], "batch_sizes": [16, 32, 64, 128, 256, 512], "weight": 0.5},
        {"name": "mnist-convnets", "batch_sizes": [16, 32, 64, 128, 256], "weight": 0.25},
        {"name": "text-lms", "weight": 0.25}]}),  # logistic regression, MLPs, ConvNets and language models
}
"""Per task family: the task options used for meta-training, the paper's network constants
(paper-notes: quadratics use the raw gradient and output scale 1; MNIST log/sign with p = 10 and
output scale 0.1; neural art, whose constants the paper does not give, MNIST's; a fine-tune's network is its ``init``
checkpoint's, so the ``module`` family, which fine-tunes, names none), the training options
``train`` defaults to (beyond :class:`RunConfig`'s and
:class:`Recipe`'s, which are the paper's; on MNIST those stay at ln 10 in about half the runs, these
learned in every run we made; neural art: the paper's horizon 128 and unroll 32) and the evaluation
protocol (art: baselines tuned on the validation photos, over a half-decade grid 1e-3..3.2 that holds every
baseline's best rate, to keep VGG-16's cost in reach)."""

TASK_NAMES = tuple(DEFAULTS)
_EXTRA_OPTIONS = {"quadratic": {"dim"}, "mnist": {"batch_size", "init_std", "root"},
                  "art": {"root", "vgg", "min_crop"}, "simple": set(), "mnist-convnet": {"batch_size", "root"},
                  "mnist-mlps": {"root", "widths", "depths", "activations", "inits", "batch_sizes"},
                  "mnist-convnets": {"root", "channels", "batch_sizes"}, "mixture": set(),
                  "text-lm": {"width", "layers", "context", "batch_size"}, "text-lms": {"widths", "batch_sizes"},
                  "user-models": set(), "module": set()}


def make_task(spec: dict[str, Any], split: str = "train", heldout_split: str | None = None,
              device: torch.device | str | None = None) -> Task:
    """Build a task from ``spec = {"name": ..., **options}``.

    ``split`` picks the data that data-backed tasks train on (``"train"``, ``"validation"``,
    ``"test"``: MNIST images or the art task's content photos) and ``heldout_split`` the data of each
    problem's held-out loss (None: none);
    quadratic and simple problems are synthetic and use fresh seeds instead. ``device``: where the
    problems live (default: CPU).
    """
    options = dict(spec)
    name = options.pop("name", None)
    if name not in DEFAULTS:
        raise ValueError(f"Unknown task {name!r}; choose one of {list(TASK_NAMES)}")
    allowed = set(DEFAULTS[name]["task"]) - {"name"} | _EXTRA_OPTIONS[name]
    if set(options) - allowed:
        raise ValueError(f"task {name!r} does not take options {sorted(set(options) - allowed)}; "
                         f"it takes {sorted(allowed) or 'none'}")
    if name == "quadratic":
        return QuadraticTask(**options, device=device)
    if name == "simple":
        return SimpleTask(device)
    if name == "art":
        return style_transfer_task(split=split, device=device, **options)
    if name in ("mixture", "user-models"):
        components = options.get("components", DEFAULTS[name]["task"]["components"])
        if any(not isinstance(c, dict) or c.get("name") in (None, "mixture") or "weight" not in c for c in components):
            raise ValueError(f"mixture components are {{'name': task, 'weight': w, ...options}} of tasks other than "
                             f"mixture, got {components}")
        return MixtureTask([(make_task({k: v for k, v in c.items() if k != "weight"}, split, heldout_split, device),
                             c["weight"]) for c in components])
    if name == "module":
        if not isinstance(options.get("reference"), str):
            raise ValueError("the module task needs a reference, MODULE:FUNCTION or FILE.py:FUNCTION (--task-module)")
        return load_user_task(options["reference"], split)
    if name == "text-lm":
        return text_lm_task(LanguageModelConfig(**{**dataclasses.asdict(HELD_OUT_LANGUAGE_MODEL), **options}), split,
                            device)
    if name == "text-lms":
        return TextLMFamily(split, device=device, **options)
    if name == "mnist-convnet":
        return mnist_task(paper_convnet, split=split, heldout_split=heldout_split, device=device, **options)
    if name in ("mnist-mlps", "mnist-convnets"):
        family = MNISTMLPFamily if name == "mnist-mlps" else MNISTConvNetFamily
        return family(split=split, heldout_split=heldout_split, device=device, **options)
    if "hidden_sizes" in options:
        options["hidden_sizes"] = tuple(options["hidden_sizes"])
    return mnist_mlp_task(split=split, heldout_split=heldout_split, device=device, **options)
