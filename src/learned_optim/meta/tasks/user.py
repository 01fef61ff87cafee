"""A task from the user's own code: ``module.path:function`` or ``path/to/file.py:function``, a function that takes
``split`` (``"train"``, ``"validation"`` or ``"test"``: the data it should draw minibatches from) and returns a
:class:`~learned_optim.meta.tasks.Task`, such as a :class:`~learned_optim.meta.tasks.ModuleTask` of the user's model,
data and loss. ``train --task-module`` meta-trains on it."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path

from .base import Task, seeded


def load_user_task(reference: str, split: str = "train") -> Task:
    """The task that ``reference``'s function returns for ``split``, checked to be a task whose problems have
    parameters; otherwise a ``ValueError`` naming the reference and what went wrong (the import failed, there is no
    such function, it returned something else, the problems have no parameters)."""
    target, separator, name = reference.rpartition(":")
    if not separator or not target or not name:
        raise ValueError(f"task module {reference!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION, e.g. "
                         "mypkg.tasks:make_task")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            unique = hashlib.sha256(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(f"learned_optim_user_task_{unique}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as error:
        raise ValueError(f"task module {reference!r}: importing {target!r} failed: {type(error).__name__}: "
                         f"{error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"task module {reference!r}: {target!r} has no function {name!r}")
    task = function(split=split)
    if not isinstance(task, Task):
        raise ValueError(f"task module {reference!r}: {name}(split={split!r}) returned {type(task).__name__}; it must "
                        "return a learned_optim.meta.tasks.Task, such as a ModuleTask(model_factory, sample_batch)")
    if not task.sample(seeded(0)).params:
        raise ValueError(f"task module {reference!r}: its problems have no parameters to optimize (a model with no "
                         "trainable parameters?)")
    return task
