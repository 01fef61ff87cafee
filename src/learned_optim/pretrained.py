"""Checkpoints: find one by name (a bundled checkpoint, a local folder, or a Hugging Face Hub repo id), read it
strictly, and validate its config and files.

Resolution order for ``pretrained=name``:

1. ``name`` is a bundled checkpoint (a folder of ``pretrained/`` shipped inside the package);
2. ``name`` is an existing local folder;
3. ``name`` looks like a Hub repo id (``"org/repo"``): downloaded once by ``huggingface_hub``
   (``revision`` pins a branch, tag or commit) and then read from its cache, also offline.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model

from .functional import OUTPUTS, PROGRESS_FEATURES
from .network import CONFIG_KEYS, CoordinatewiseLSTM
from .preprocessing import NOMINAL_ENCODINGS, PREPROCESSINGS


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not match the network it should load into."""


DEFAULT_CHECKPOINT = "l2o-generalist-3"
"""The network ``LearnedOptimizer(params)`` runs: meta-trained on many MLP architectures, not one task, with
step-scale control and a nominal Adam term in the loop."""
CHECKPOINT_FILES = [constants.CONFIG_NAME, constants.SAFETENSORS_SINGLE_FILE, "README.md"]
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _bundled_root() -> Path:
    """``pretrained/`` of the repository, installed as the data package ``learned_optim.checkpoints``."""
    return Path(str(resources.files("learned_optim.checkpoints")))


def list_pretrained() -> dict[str, str]:
    """Bundled checkpoint names, each with the one-line description from its model card."""
    root = _bundled_root()
    if not root.is_dir():
        return {}
    return {
        folder.name: _summary(folder / "README.md")
        for folder in sorted(root.iterdir())
        if (folder / constants.CONFIG_NAME).is_file()
    }


def _summary(card: Path) -> str:
    """The first prose line of a model card, after its YAML front matter and headings."""
    if not card.is_file():
        return ""
    text = card.read_text(encoding="utf-8")
    if text.startswith("---"):
        text = text.split("---", 2)[2]
    lines = (line.strip() for line in text.splitlines())
    return next((line for line in lines if line and not line.startswith("#")), "")


def resolve(name: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder holding checkpoint ``name`` (see the module docstring for the order).

    Raises:
        CheckpointError: ``name`` is neither bundled, nor a folder, nor a Hub repo id, or the Hub
            cannot be reached and no cached copy exists.
    """
    name = os.fspath(name)
    bundled = _bundled_root() / name
    if "/" not in name and (bundled / constants.CONFIG_NAME).is_file():
        if revision is not None:
            raise CheckpointError(f"{name!r} is a bundled checkpoint, which has no revisions: "
                                  f"drop revision={revision!r} (revisions apply to Hugging Face Hub repo ids such as "
                                  "'org/repo')")
        return bundled
    if os.path.isdir(name):
        return Path(name)
    if not _REPO_ID.match(name):
        raise CheckpointError(
            f"unknown checkpoint {name!r}: not a bundled name ({', '.join(list_pretrained()) or 'none bundled'}), "
            "not an existing folder, and not a Hugging Face Hub repo id of the form 'org/repo'"
        )
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=CHECKPOINT_FILES))
    except LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise CheckpointError(
            f"checkpoint {name!r} (revision {revision or 'main'}) is not in the local Hugging Face cache and {why}; "
            "pass a local folder (pretrained='path/to/folder'), a bundled name, or connect and unset HF_HUB_OFFLINE"
        ) from error
    except HfHubHTTPError as error:
        raise CheckpointError(f"could not download checkpoint {name!r} from the Hugging Face Hub: {error}") from error


def load(name: str | os.PathLike = DEFAULT_CHECKPOINT, revision: str | None = None) -> CoordinatewiseLSTM:
    """Load a checkpoint strictly: bundled name, local folder, or Hub repo id (see :func:`resolve`).

    Raises:
        CheckpointError: the checkpoint cannot be found, or its files are unreadable, inconsistent or non-finite.
    """
    return CoordinatewiseLSTM.from_pretrained(resolve(name, revision))


def read_folder(network_class: type[CoordinatewiseLSTM], folder: str | os.PathLike, config: dict | None,
                map_location: str = "cpu") -> CoordinatewiseLSTM:
    """A network of ``network_class`` from the local checkpoint ``folder`` (its ``config.json`` read into
    ``config``), strictly: ``CoordinatewiseLSTM.from_pretrained`` comes here, after :func:`resolve`.

    The config is checked, then the tensor names, shapes and dtypes in the safetensors header against
    it, all before anything is allocated; then the weights are loaded, checked to be finite and, where
    the file records one, against its fingerprint.
    """
    name, folder = os.fspath(folder), Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint folder {name!r} does not exist; use learned_optim.pretrained.resolve() "
            "to turn a bundled name or Hub repo id into a folder"
        )
    if config is None:
        raise CheckpointError(f"checkpoint {name!r} has no {constants.CONFIG_NAME}; "
                              "save it with save_pretrained()")
    config = _checked_config(config, folder / constants.CONFIG_NAME)
    weights = folder / constants.SAFETENSORS_SINGLE_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {name!r} has no {constants.SAFETENSORS_SINGLE_FILE}")
    try:
        with safe_open(os.fspath(weights), "pt", device="cpu") as handle:
            header = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                      for name in handle.keys()}
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({error}); it may be truncated or corrupt: "
            "download or save the checkpoint again"
        ) from error
    expected = _expected_shapes(config)
    shapes = {name: shape for name, (shape, _) in header.items()}
    if shapes != expected:
        missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
        misshapen = [f"{name} {shapes[name]} (expected {shape})" for name, shape in expected.items()
                     if name in shapes and shapes[name] != shape]
        raise CheckpointError(f"{weights} does not match its config {config}: missing {missing}, "
                              f"unexpected {unexpected}, misshapen {misshapen}")
    extra_keys = sorted(set(metadata) - {"format", "fingerprint"})
    if extra_keys:
        raise CheckpointError(f"{weights} has unexpected metadata keys {extra_keys}; "
                              "the file is corrupt or was not written by learned_optim: save it again")
    dtypes = {name: dtype for name, (_, dtype) in header.items() if dtype != "F32"}
    if dtypes:
        raise CheckpointError(f"{weights} holds tensors of dtype {dtypes}; checkpoints are float32 (F32)")
    model = network_class(**config)
    try:
        load_model(model, os.fspath(weights), strict=True, device=map_location)
    except (SafetensorError, RuntimeError) as error:
        raise CheckpointError(f"{weights} could not be read ({error}); "
                              "download or save the checkpoint again") from error
    broken = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if broken:
        raise CheckpointError(f"{weights} holds non-finite (nan/inf) weights in {broken}: a diverged or corrupt "
                              "checkpoint would write nan into your model; use another checkpoint")
    if "fingerprint" in metadata and metadata["fingerprint"] != model.fingerprint():
        raise CheckpointError(f"{weights} does not match the fingerprint it was saved with: the file was changed "
                              "or corrupted after saving; download or save the checkpoint again")
    return model.eval()


_CONSTRUCTOR_DEFAULTS = {name: parameter.default for name, parameter in
                         inspect.signature(CoordinatewiseLSTM.__init__).parameters.items()
                         if parameter.default is not inspect.Parameter.empty}
MAX_HIDDEN_SIZE, MAX_LAYERS = 4096, 64
"""Bounds on a checkpoint's declared network size (the paper's is 20 units, 2 layers)."""


def _checked_config(config: dict, path: Path) -> dict[str, Any]:
    """``config`` if its keys, types and ranges are valid, else a :class:`CheckpointError` naming ``path``."""
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{path} has unknown config keys {sorted(unknown)}; expected a subset of "
                              f"{list(CONFIG_KEYS)} (was it written by another library?)")
    checks = {
        "hidden_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_HIDDEN_SIZE,
        "num_layers": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_LAYERS,
        "preprocessing": lambda v: isinstance(v, str) and v in PREPROCESSINGS,
        "p": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
        "output_scale": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "output": lambda v: isinstance(v, str) and v in OUTPUTS,
        "nominal": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        "scale_rate": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
        "progress": lambda v: isinstance(v, bool),
    }
    invalid = {key: config[key] for key, ok in checks.items() if key in config and not ok(config[key])}
    if config.get("nominal") and config.get("preprocessing") not in NOMINAL_ENCODINGS:
        invalid["nominal"] = config["nominal"]
    if invalid:
        raise CheckpointError(f"{path} has an invalid config: {invalid} (hidden_size 1..{MAX_HIDDEN_SIZE}, "
                              f"num_layers 1..{MAX_LAYERS}, preprocessing one of {sorted(PREPROCESSINGS)}, "
                              f"finite p > 0 and output_scale, finite nominal >= 0, scale_rate in [0, 1], progress "
                              f"a bool, output one of {sorted(OUTPUTS)}; a nominal term needs preprocessing one of "
                              f"{list(NOMINAL_ENCODINGS)})")
    return config


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of :class:`CoordinatewiseLSTM` ``(**config)``, computed without building it."""
    config = {**_CONSTRUCTOR_DEFAULTS, **config}
    hidden, layers = config["hidden_size"], config["num_layers"]
    features = PREPROCESSINGS[config["preprocessing"]].features + PROGRESS_FEATURES * bool(config["progress"])
    shapes = {"head.weight": (1, hidden), "head.bias": (1,)}
    for layer in range(layers):
        shapes.update({f"cells.{layer}.weight_ih": (4 * hidden, features if layer == 0 else hidden),
                       f"cells.{layer}.weight_hh": (4 * hidden, hidden),
                       f"cells.{layer}.bias_ih": (4 * hidden,), f"cells.{layer}.bias_hh": (4 * hidden,)})
    return shapes
