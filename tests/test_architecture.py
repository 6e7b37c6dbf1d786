"""The package's layering, as the import contracts in pyproject.toml state it (checked by
import-linter, in CI too): each layer of docs/architecture.md reads only the layers below
it, every import counted (those inside functions too), and no package's modules import
each other in a cycle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


CONTRACTS = """
[importlinter]
root_package = toy

[importlinter:contract:layers]
name = layers
type = layers
containers = toy
layers =
    high
    low

[importlinter:contract:cycles]
name = cycles
type = acyclic_siblings
ancestors = toy
"""


@pytest.mark.parametrize("files", [
    {"high.py": "", "low.py": "import toy.high\n"},  # an upward import
    {"high.py": "import toy.low\n", "low.py": "", "a.py": "import toy.b\n", "b.py": "def f():\n    import toy.a\n"},  # a cycle
], ids=["upward", "cycle"])
def test_the_contracts_catch_an_upward_import_and_a_cycle(tmp_path, monkeypatch, files):
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        (package / name).write_text(text)
    (tmp_path / ".importlinter").write_text(CONTRACTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert lint_imports(config_filename=str(tmp_path / ".importlinter"), no_cache=True, no_logo=True) == 1
    finally:
        sys.modules.pop("toy", None)
