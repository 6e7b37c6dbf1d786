"""A table's build: its rows committed as JSON lines, and a build resumed from them alone
on a machine without the run directories, training only the networks they lack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coatsearch.search import compile_space
from coatsearch.search.jsonl_ledger import read_rows
from coatsearch.search.optuna_storage import open_study
from coatsearch.search.optuna_trials import ledger
from coatsearch.search.table_build import export_rows, first_block, seed_study
from coatsearch.space import space_from_dict
from coatsearch.status import Status
from tests.conftest import TINY_SPACE
from tests.test_replay import TABLE_SPACE, make_table

ROOT = Path(__file__).resolve().parent.parent


def test_committed_rows_seed_a_study_that_exports_them_unchanged(tmp_path: Path) -> None:
    folder = make_table(tmp_path / "table", seeds=False)
    plan = compile_space(space_from_dict(TABLE_SPACE), check_data=False)
    assert seed_study(plan, tmp_path / "run", folder / "space.jsonl") == 6
    rows = ledger(open_study(plan, tmp_path / "run"), retries=1)
    committed = read_rows(folder / "space.jsonl")
    assert [r.to_record() for r in rows] == [r.to_record() for r in committed]
    # the sampler sees them as the optuna backend stored them: trained ones with values, infeasible pruned
    states = {t.number: t.state.name for t in open_study(plan, tmp_path / "run").get_trials()}
    assert {states[r.trial] for r in committed if r.status == Status.COMPLETE} == {"COMPLETE"}
    assert {states[r.trial] for r in committed if r.status == Status.INFEASIBLE} <= {"PRUNED"}
    assert export_rows(plan, tmp_path / "run", tmp_path / "again.jsonl") == 6
    assert (tmp_path / "again.jsonl").read_text().splitlines() == [
        json.dumps(r.to_record(), separators=(",", ":"), default=str) for r in committed]
    with pytest.raises(ValueError, match="already holds a study"):
        seed_study(plan, tmp_path / "run", folder / "space.jsonl")


def test_the_first_block_is_the_outermost_parameters_first_value() -> None:
    plan = compile_space(space_from_dict(TABLE_SPACE), check_data=False)
    outer = next(iter(plan.space.params))
    expected = 0
    for params in plan.grid:
        if params[outer] == plan.grid[0][outer]:
            try:
                plan.candidate(params)
                expected += 1
            except ValueError:
                pass
    assert 0 < first_block(plan) == expected < plan.target_trials


def _build(folder: Path, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_table.py"), str(folder), "--runs", str(runs)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_build_resumes_from_the_committed_rows_alone(tmp_path: Path, capsys) -> None:
    """The first build is the script as a user types it; the sync and the resumed build are
    the same functions called here (the stack's imports paid once)."""
    from scripts.build_table import build
    from scripts.sync_table import sync

    folder = tmp_path / "tiny"
    folder.mkdir()
    space = {**TINY_SPACE, "study": "tiny-table", "params": {"split": {"choices": [1, 2]}, "seed": {"choices": [0]}},
             "train": {"epochs": 1, "batch_size": 64}, "trials": 2}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    first = _build(folder, tmp_path / "runs")
    assert first.returncode == 0, first.stderr
    sync(folder, tmp_path / "runs")
    committed = read_rows(folder / "space.jsonl")
    assert [r.status for r in committed] == [Status.COMPLETE, Status.COMPLETE]
    # a new machine: no run directories, one network's row lost from the committed file
    kept, lost = committed
    (folder / "space.jsonl").write_text(kept.to_json() + "\n")
    capsys.readouterr()
    build(folder, tmp_path / "elsewhere")
    assert "seeded with 1 rows" in capsys.readouterr().out
    sync(folder, tmp_path / "elsewhere")
    rows = read_rows(folder / "space.jsonl")
    assert [r.point for r in rows] == [kept.point, lost.point]
    assert rows[0].to_record() == kept.to_record()  # the committed network was not trained again
    assert rows[1].history != lost.history or rows[1].worker != lost.worker  # the lost one was


def test_the_readme_sections_are_drawn_from_the_rows(tmp_path: Path) -> None:
    from coatsearch.search.table import load_table
    from coatsearch.search.table_summary import noise_markdown, status_markdown, write_readme

    folder = make_table(tmp_path / "table")
    table = load_table(str(folder))
    pairs = [(table.lookup({"layout": "C-C-C-C", "split": s}).row, table.lookup({"layout": "C-C-C-C", "split": s, "seed": 1}).row)
             for s in (1, 2)]
    diffs = [100 * (b.val_acc - a.val_acc) for a, b in pairs]
    noise = noise_markdown(table)
    assert "pairs (the same network at seeds 0 and 1): 2" in noise
    assert f"mean {sum(diffs) / 2:+.2f} pp" in noise
    trained = [e for e in table.entries.values() if e.row.status == Status.COMPLETE]
    cpu = sum(sum(e.seconds) for e in trained)
    status = status_markdown(table, {"space": 5, "seeds": 2}, [])
    assert f"compute so far: {cpu / 3600:.2f} CPU-hours" in status
    (folder / "README.md").write_text("x\n<!-- table:noise:start -->\nold\n<!-- table:noise:end -->\ny\n")
    write_readme(table, {"space": 5, "seeds": 2}, [])
    text = (folder / "README.md").read_text()
    assert "old" not in text and noise in text and text.startswith("x\n") and text.endswith("y\n")
