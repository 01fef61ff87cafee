"""Find a checkpoint by name: a bundled checkpoint, a local folder, or a Hugging Face Hub repo id.

Resolution order for ``pretrained=name``:

1. ``name`` is a bundled checkpoint (a folder of ``pretrained/`` shipped inside the package);
2. ``name`` is an existing local folder;
3. ``name`` looks like a Hub repo id (``"org/repo"``): downloaded once by ``huggingface_hub``
   (``revision`` pins a branch, tag or commit) and then read from its cache, also offline.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from .network import CheckpointError, CoordinatewiseLSTM

DEFAULT_CHECKPOINT = "l2o-generalist"
"""The network ``LearnedOptimizer(params)`` runs: meta-trained on many MLP architectures, not one task."""
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
