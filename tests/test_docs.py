"""The documentation: every public name is in the API reference and has a docstring, and the README stays short.
(The site itself is built with ``mkdocs build --strict`` in CI, which fails on a broken link or reference.)"""

import importlib
import inspect
import re
from pathlib import Path

import learned_optim

ROOT = Path(__file__).parents[1]
DOCUMENTED = re.findall(r"^::: ([\w.]+)$", (ROOT / "docs" / "api.md").read_text(), re.MULTILINE)


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_public_name_is_in_the_api_reference():
    assert {f"learned_optim.{name}" for name in learned_optim.__all__} <= set(DOCUMENTED)


def test_every_documented_object_and_its_public_methods_have_docstrings():
    undocumented = []
    for dotted in DOCUMENTED:
        obj = resolve(dotted)
        if not inspect.getdoc(obj):
            undocumented.append(dotted)
        if inspect.isclass(obj):
            for name in vars(obj):
                member = getattr(obj, name)
                if not name.startswith("_") and callable(member) and not inspect.getdoc(member):
                    undocumented.append(f"{dotted}.{name}")
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_readme_is_short_and_names_no_issue_or_date():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert not re.search(r"\bissue \d+|\b20\d\d-\d\d-\d\d\b", readme, re.IGNORECASE)
