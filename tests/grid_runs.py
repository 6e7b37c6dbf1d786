"""The tiny 2x3 grid that the tests of stopped runs stop and finish (tests/test_reliability.py,
tests/test_hostile.py): its space, the command that runs it, and the check that a re-run or
a resume finished it: every point once, the trials finished before the stop unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.results import read_table
from tests.conftest import TINY_SPACE

#: split {1, 2} x seed {0, 1, 2}, six trials.
GRID = {"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1, 2]}}
POINTS = {(s, seed) for s in (1, 2) for seed in (0, 1, 2)}


def tiny_space(tmp_path: Path, *, train: dict, **changes) -> Path:
    """TINY_SPACE on the 2x3 grid (unless ``changes`` replace ``params`` and ``trials``),
    written to ``tmp_path``; ``train`` is asked for because how long a trial runs decides
    whether a stop lands inside one."""
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    data.update(params=GRID, trials=6, sampler="grid", train=train)
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_command(space: Path, out: Path, *extra: str) -> list[str]:
    """``coatsearch run`` as a user types it, in a process of its own."""
    return [sys.executable, "-m", "coatsearch.cli", "run", str(space), "--out", str(out), *extra]


def resume_command(out: Path) -> list[str]:
    """``coatsearch resume`` as a user types it, in a process of its own."""
    return [sys.executable, "-m", "coatsearch.cli", "resume", str(out)]


def finished(out: Path) -> pd.DataFrame | None:
    """The complete rows of ``out``'s results.csv; None while it is missing or being
    replaced (for polling: a check reads the table with ``read_table``)."""
    path = out / "results.csv"
    if not path.exists():
        return None
    try:
        table = read_table(path)
    except Exception:  # being replaced right now
        return None
    return table[table["status"] == "complete"]


def assert_every_point_once(out: Path) -> pd.DataFrame:
    """The grid's six points each ran once, all complete; returns the table."""
    table = read_table(out / "results.csv")
    points = list(zip(table["param.split"], table["param.seed"]))
    assert len(table) == 6 and set(points) == POINTS, points
    assert (table["status"] == "complete").all(), table["status"].tolist()
    return table


def finishes_keeping(command: list[str], out: Path, before: pd.DataFrame | None, *, in_process: bool = False) -> None:
    """``command`` (the same run again, or ``coatsearch resume``) finishes the run, every
    point once; the trials in ``before`` (finished before the stop) are there, unchanged:
    they did not run again. ``in_process``: through typer's runner in this process (for a
    run that trains in the process that runs it, optuna at concurrency 1, only the imports
    differ from a command of its own)."""
    if in_process:
        invoked = CliRunner().invoke(app, command[3:])  # after "python -m coatsearch.cli"
        assert invoked.exit_code == 0, (invoked.stderr[-3000:], invoked.exception)
    else:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    table = assert_every_point_once(out)
    if before is None:
        return
    for _, row in before.iterrows():
        again = table[table["trial"] == row["trial"]]
        assert len(again) == 1, f"trial {row['trial']}, finished before the stop, is gone"
        for column in ("point", "val_acc", "wall_time", "worker", "history"):
            assert again.iloc[0][column] == row[column], (row["trial"], column)
