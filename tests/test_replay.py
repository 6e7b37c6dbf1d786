"""The replay backend over a small table generated here: every trial's curve read back
epoch by epoch on a simulated clock, with the same samplers, ASHA rungs and rows as a
real search, and tables or spaces it cannot replay refused in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.jsonl_ledger import read_ledger
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.search.rows import Epoch, TrialRow
from coatsearch.search.table import TableError, load_table
from coatsearch.space import space_from_dict
from coatsearch.status import Status
from tests.conftest import TINY_SPACE

EPOCHS = 4
TABLE_SPACE = {
    **TINY_SPACE, "study": "fixture-table",
    "params": {"layout": {"choices": ["C-C-C-C", "C-C-T-T", "C-T-T-T"]}, "split": {"choices": [1, 2]}},
    "train": {"epochs": EPOCHS, "batch_size": 64}, "trials": 6, "seed": 0,
}


def _curve(index: int, seed: int) -> list[dict]:
    """A plausible learning curve of ``EPOCHS`` epochs, different for every network and seed."""
    rng = random.Random(1000 * seed + index)
    final, cost = 0.55 + 0.4 * rng.random(), 1.0 + index
    return [{"epoch": e, "val_acc": round(final * (1 - 0.6 ** e), 4), "val_loss": round(2 * 0.7 ** e, 4),
             "train_eval_acc": round(min(1.0, final * (1 - 0.5 ** e) + 0.05), 4), "train_loss_running": 1.0 / e,
             "epoch_s": 3 * cost, "epoch_cpu_s": cost + 0.1 * e, "wall_time": 3 * cost * e} for e in range(1, EPOCHS + 1)]


def make_table(folder: Path, space: dict | None = None, seeds: bool = True, drop: tuple[int, ...] = ()) -> Path:
    """A table folder: ``space.yaml``, its rows (minus the grid points ``drop``), and a
    second seed of the C-C-C-C networks."""
    folder.mkdir(parents=True, exist_ok=True)
    space = space or TABLE_SPACE
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    plan = compile_space(space_from_dict(space), check_data=False)
    rows = _rows(plan, 0, drop)
    (folder / "space.jsonl").write_text("".join(r.to_json() + "\n" for r in rows))
    if seeds:
        second = {**space, "study": "fixture-seeds", "trials": 2,
                  "params": {**space["params"], "layout": {"choices": ["C-C-C-C"]}, "seed": {"choices": [1]}}}
        (folder / "seeds.yaml").write_text(yaml.safe_dump(second))
        seeds_plan = compile_space(space_from_dict(second), check_data=False)
        (folder / "seeds.jsonl").write_text("".join(r.to_json() + "\n" for r in _rows(seeds_plan, 1, ())))
    return folder


def _rows(plan, seed: int, drop: tuple[int, ...]) -> list[TrialRow]:
    rows = []
    for index, params in enumerate(plan.grid):
        if index in drop:
            continue
        try:
            candidate = plan.candidate(params)
        except InfeasibleCandidate as exc:
            rows.append(TrialRow(index, Status.INFEASIBLE, sampled=params, max_fidelity=EPOCHS, reason=str(exc)))
            continue
        history = _curve(index, seed)
        rows.append(TrialRow(
            index, Status.COMPLETE, sampled=params, max_fidelity=EPOCHS, fidelity=EPOCHS, **candidate.net.columns(), val_acc=history[-1]["val_acc"],
            val_loss=history[-1]["val_loss"], train_eval_acc=history[-1]["train_eval_acc"], test_acc=0.5,
            seed=seed, val_correct="packed", history=tuple(map(Epoch.model_validate, history)), wall_time=99.0,
        ))
    return rows


def replay(table: Path, out: Path, **changes) -> list[TrialRow]:
    space = {**TABLE_SPACE, "backend": "replay", "table": str(table), **changes}
    plan = compile_space(space_from_dict(space), check_data=False)
    run_study(plan, out)
    return read_ledger(out)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("tables") / "fixture")


def test_a_grid_replays_every_network_from_the_table(table: Path, tmp_path: Path) -> None:
    rows = replay(table, tmp_path / "run")
    entries = load_table(str(table)).entries
    trained = [r for r in rows if r.status == Status.COMPLETE]
    assert len(trained) == sum(e.row.status == Status.COMPLETE and e.row.seed == 0 for e in entries.values())
    assert {r.status for r in rows} <= {Status.COMPLETE, Status.INFEASIBLE}
    by_point = {e.row.point: e for e in entries.values() if e.row.seed == 0}
    clock = 0.0
    for row in sorted(trained, key=lambda r: r.clock_start):
        entry = by_point[row.point]
        # the table's curve, and its recorded CPU seconds as the trial's compute
        assert row.val_acc == entry.row.val_acc and row.history == entry.row.history
        assert row.wall_time == pytest.approx(sum(e.epoch_cpu_s for e in entry.epochs))
        # one worker: each trial starts when the one before it ends
        assert row.clock_start == pytest.approx(clock) and row.clock_end == pytest.approx(clock + row.wall_time)
        clock = row.clock_end
    table_csv = (tmp_path / "run" / "results.csv").read_text()
    assert "clock_end" in table_csv.splitlines()[0]


def test_concurrent_workers_share_the_clock(table: Path, tmp_path: Path) -> None:
    one = replay(table, tmp_path / "one", sampler="random", trials=4)
    two = replay(table, tmp_path / "two", sampler="random", trials=4, concurrency=2)
    busy = [r for r in two if r.status == Status.COMPLETE]
    makespan = max(r.clock_end for r in busy)
    assert makespan < sum(r.wall_time for r in busy)  # two workers overlap
    assert {r.worker for r in busy} == {"replay:0", "replay:1"}
    # a trial never starts before a worker is free: at most two run at any moment
    for row in busy:
        assert sum(r.clock_start <= row.clock_start < r.clock_end for r in busy) <= 2
    assert max(r.clock_end for r in one if r.status == Status.COMPLETE) >= makespan


def test_asha_stops_trials_at_their_rung_with_that_epochs_metrics(table: Path, tmp_path: Path) -> None:
    full = replay(table, tmp_path / "full")
    rows = replay(table, tmp_path / "asha", early_stopping={"kind": "asha", "grace_period": 1, "reduction_factor": 2})
    stopped = [r for r in rows if r.status == Status.STOPPED]
    assert stopped, "the rungs stopped no trial"
    for row in stopped:
        history = [epoch.record() for epoch in row.history or ()]
        assert row.fidelity in (1, 2) and len(history) == row.fidelity
        assert row.val_acc == history[-1]["val_acc"] and row.test_acc is None and row.val_correct is None
        assert row.wall_time == pytest.approx(sum(e["epoch_cpu_s"] for e in history))
    assert sum(r.wall_time or 0 for r in rows) < sum(r.wall_time or 0 for r in full)


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_a_replay_is_deterministic_for_a_seed(table: Path, tmp_path: Path, sampler: str) -> None:
    def points(name: str, seed: int) -> list[tuple]:
        rows = replay(table, tmp_path / name, sampler=sampler, trials=5, seed=seed)
        return [(r.trial, r.point, r.status, r.clock_end) for r in rows]

    assert points("a", 3) == points("b", 3)


def test_a_resumed_replay_draws_what_an_uninterrupted_one_draws(table: Path, tmp_path: Path) -> None:
    whole = replay(table, tmp_path / "whole", sampler="random", trials=5, seed=7)
    replay(table, tmp_path / "parts", sampler="random", trials=2, seed=7)
    parts = replay(table, tmp_path / "parts", sampler="random", trials=5, seed=7)
    assert [(r.trial, r.point, r.clock_end) for r in parts] == [(r.trial, r.point, r.clock_end) for r in whole]


def test_a_seed_parameter_replays_the_tables_second_seed(table: Path, tmp_path: Path) -> None:
    loaded = load_table(str(table))
    first = loaded.lookup({"layout": "C-C-C-C", "split": 1})
    second = loaded.lookup({"layout": "C-C-C-C", "split": 1, "seed": 1})
    assert first.row.seed == 0 and second.row.seed == 1 and first.row.history != second.row.history
    rows = replay(table, tmp_path / "seeds", params={"layout": {"choices": ["C-C-C-C"]}, "split": {"choices": [1, 2]},
                                                    "seed": {"choices": [1]}}, trials=2)
    assert {r.seed for r in rows} == {1}


# --------------------------------------------------------------------------- refusals
runner = CliRunner()


def _refused(tmp_path: Path, space: dict, *args: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not out.exists()  # nothing written
    return lines[0]


def test_a_candidate_the_table_lacks_is_refused_before_anything_runs(tmp_path: Path) -> None:
    partial = make_table(tmp_path / "partial", seeds=False, drop=(0,))
    line = _refused(tmp_path, TABLE_SPACE, "--table", str(partial))
    assert "lacks the candidate" in line and '"layout":"C-C-C-C"' in line and '"split":1' in line
    # the subspace it does hold replays
    rows = replay(partial, tmp_path / "ok", params={"layout": {"choices": ["C-C-T-T", "C-T-T-T"]},
                                                   "split": {"choices": [1, 2]}}, trials=4)
    assert rows


@pytest.mark.parametrize("change, expect", [
    ({"params": {"layout": {"choices": ["C-C-C-C", "vit-rel"]}}}, "params.layout: 'vit-rel' is not in table"),
    ({"params": {"head_dim": {"choices": [16]}}}, "params.head_dim: table fixture does not vary head_dim"),
    ({"train": {"epochs": 2, "batch_size": 64}}, "train: the space's train differs from table fixture's"),
    ({"objectives": ["val_acc", "latency_ms"]}, "objectives: table fixture has no latency_ms"),
    # a table trained on one subset for every seed holds no per-seed subsets' networks
    ({"data": {**TABLE_SPACE["data"], "subset": "per_seed"}}, "data: the space's data differs from table fixture's"),
])
def test_a_space_that_is_not_a_subspace_is_refused(table: Path, tmp_path: Path, change: dict, expect: str) -> None:
    assert expect in _refused(tmp_path, {**TABLE_SPACE, "sampler": "random", **change}, "--table", str(table))


def test_trainer_settings_written_out_at_their_defaults_are_the_same_training(table: Path, tmp_path: Path) -> None:
    rows = replay(table, tmp_path / "run", sampler="random", trials=2,
                  train={**TABLE_SPACE["train"], "lr": 2e-3, "warmup_epochs": 0.5})
    assert len([r for r in rows if r.finished]) == 2


def test_a_continuous_range_is_not_a_subspace(table: Path) -> None:
    # compiling refuses this one first (split takes whole numbers); the table's own check says why too
    space = space_from_dict({**TABLE_SPACE, "sampler": "random", "params": {"split": {"low": 1.0, "high": 2.0}}})
    with pytest.raises(TableError, match="params.split: a continuous range cannot be replayed"):
        load_table(str(table)).check_space(space)


def _edit_first_row(folder: Path, **cells) -> None:
    """Change cells of the first trained row of a table's rows file."""
    path = folder / "space.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first = next(r for r in records if r["status"] == "complete")
    first.update(cells)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("damage, expect", [
    (lambda f: (f / "space.jsonl").write_text((f / "space.jsonl").read_text() + "{not json\n"), "space.jsonl: line 7 is not a trial row"),
    (lambda f: (f / "space.jsonl").write_text((f / "space.jsonl").read_text().rstrip("\n")), "is cut short"),
    (lambda f: (f / "space.jsonl").unlink(), "space.jsonl: missing"),
    (lambda f: (f / "space.yaml").unlink(), "not a table (no space.yaml)"),
    (lambda f: _edit_first_row(f, history=json.dumps([{"epoch": e, "val_acc": 0.5} for e in range(1, EPOCHS + 1)])),
     "epoch 1 has no time"),
    (lambda f: _edit_first_row(f, history="[]"), "history holds 0 epochs, fidelity says 4"),
    (lambda f: _edit_first_row(f, **{"param.layout": "C-C-C-X"}), "layout='C-C-C-X' is not a point of the table's space"),
])
def test_a_damaged_table_is_refused_in_one_line(tmp_path: Path, damage, expect: str) -> None:
    folder = make_table(tmp_path / "damaged", seeds=False)
    damage(folder)
    with pytest.raises(TableError, match=None) as caught:
        load_table(str(folder))
    assert expect in str(caught.value) and "\n" not in str(caught.value)
    assert expect in _refused(tmp_path, TABLE_SPACE, "--table", str(folder))


def test_table_and_backend_options_go_together(table: Path, tmp_path: Path) -> None:
    assert "--table: a table is replayed by --backend replay" in _refused(
        tmp_path, TABLE_SPACE, "--table", str(table), "--backend", "ray")
    assert "the replay backend needs a table" in _refused(tmp_path, TABLE_SPACE, "--backend", "replay")
    assert "no such table folder" in _refused(tmp_path, TABLE_SPACE, "--table", "no-such-table")


def test_the_cost_line_counts_infeasible_points_apart_from_the_trials() -> None:
    import pandas as pd

    from coatsearch.cli import _replay_line

    frame = pd.DataFrame({
        "status": ["complete", "infeasible", "stopped", "infeasible", "complete"],
        "wall_time": [1800.0, 0.0, 900.0, 0.0, 3600.0],
        "clock_end": [1800.0, 0.0, 2700.0, 0.0, 4000.0],
        "warm_start": [None, None, None, None, "runs/explore#0"],  # an earlier run's: not this run's cost
    })
    line = _replay_line(frame, 2)
    assert line.startswith("replayed: 2 trials (and 2 infeasible point(s), not trained) would have taken 0.75 CPU-hours")
    assert "0.75 hours on 2 worker(s)" in line
    assert _replay_line(frame[frame["status"] != "infeasible"], 1).startswith("replayed: 2 trials would have taken")


def test_the_command_line_says_what_a_replay_would_have_cost(table: Path, tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TABLE_SPACE, "sampler": "random", "trials": 3}))
    result = runner.invoke(app, ["run", str(path), "--table", str(table), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rows = read_ledger(tmp_path / "run")
    compute = sum(r.wall_time or 0 for r in rows) / 3600
    trained = [r for r in rows if r.status != Status.INFEASIBLE]
    assert len(trained) == 3 and len(rows) > 3  # the fixture's space has infeasible points: counted apart
    said = f"(and {len(rows) - 3} infeasible point(s), not trained)"
    assert f"replayed: 3 trials {said} would have taken {compute:.2f} CPU-hours" in " ".join(result.output.split())
