"""Every Python block of the README and docs/ runs as written, but for the sizes named in
SMOKE (a whole search or five epochs would take minutes): what each block shows works. And
docs/architecture.md's package map names every module there is, and none that is not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

#: (page, text, replacement): the runs the blocks start, made small enough for the suite.
SMOKE = [
    ("architecture.md", 'load_space("spaces/layout_split.yaml")',
     'load_space("spaces/layout_split.yaml", ["trials=1", "train.epochs=1", "data.train_size=128", "data.val_fraction=0.05"])'),
    ("training.md", "TrainConfig(epochs=5, eval_test=True)", "TrainConfig(epochs=1, steps=2, eval_test=True)"),
]


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for k, match in enumerate(BLOCK.finditer(page.read_text())):
            code = match.group(1)
            for name, text, smaller in SMOKE:
                if page.name == name:
                    assert text in code, f"{name}: the block no longer says {text!r}; update SMOKE"
                    code = code.replace(text, smaller)
            found.append((f"{page.relative_to(ROOT)}#{k}", code))
    return found


BLOCKS = _blocks()


def test_the_pages_have_python_blocks() -> None:
    pages = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"README.md", "docs/training.md", "docs/scaling.md", "docs/spec.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize("name,code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_a_python_block_runs(name: str, code: str, tmp_path: Path) -> None:
    (tmp_path / "spaces").symlink_to(ROOT / "spaces")  # the paths the blocks name, runs/ written here
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"


def _map_entries() -> dict[str, str]:
    """docs/architecture.md's package map: each top-level entry of coatsearch/ with its text."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```\ncoatsearch/\n", 1)[1].split("\n```", 1)[0]
    entries: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        found = re.match(r"^  (\w+)(?:/|\.py)\s", line)
        if found:
            name = found.group(1)
            entries[name] = line
        elif not line.startswith("   "):
            name = None
        elif name is not None:
            entries[name] += " " + line
    return entries


def test_the_architecture_map_names_every_module() -> None:
    entries = _map_entries()
    package = ROOT / "coatsearch"
    top = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert top - {"__init__", "__main__"} <= set(entries), "modules missing from docs/architecture.md"
    assert set(entries) - {"datasets"} <= top, "docs/architecture.md names modules that do not exist"
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").exists()):
        words = set(re.findall(r"\w+", entries[sub.name]))
        unnamed = {m.stem for m in sub.glob("*.py")} - {"__init__"} - words
        assert not unnamed, f"docs/architecture.md: {sub.name}/ does not name {sorted(unnamed)}"
