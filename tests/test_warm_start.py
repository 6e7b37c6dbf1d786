"""Warm starts: an earlier run's finished trials handed to a new run's sampler before its
first trial, on the replay, optuna and ray backends, never counted or added twice; spaces
that cannot share them refused in one line with nothing written."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.results import write_table
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.jsonl_ledger import read_ledger
from coatsearch.search.progress import TrialEstimates
from coatsearch.search.rows import TrialRow
from coatsearch.search.saved_space import saved_space
from coatsearch.space import load_space, space_from_dict
from coatsearch.status import Status
from coatsearch.warm_start import warm_rows
from tests.conftest import TINY_SPACE
from tests.test_search import no_leaked_ray  # noqa: F401  (a fixture: Ray shut down, no process left)

TABLE = "tables/fmnist32"
#: A corner of the shipped table every point of which is trained: 8 networks.
SUBSPACE = ["params.depth_multiplier.choices=[1]", "params.scale.choices=[1]", "backend=replay", f"table={TABLE}"]


def _replay(out: Path, *overrides: str) -> Path:
    space = load_space(f"{TABLE}/space.yaml", [*SUBSPACE, *overrides])
    run_study(compile_space(space, check_data=False), out, console=Console(file=io.StringIO()))
    return out


@pytest.fixture(scope="module")
def earlier4(tmp_path_factory) -> Path:
    """An earlier replayed run of four random trials, shared by the tests that only read it."""
    return _replay(tmp_path_factory.mktemp("earlier") / "a", "sampler=random", "trials=4")


@pytest.mark.slow
def test_a_replay_hands_the_earlier_trials_to_the_sampler_once_and_does_not_count_them(tmp_path):
    earlier = _replay(tmp_path / "a", "sampler=random", "trials=6")
    later = _replay(tmp_path / "b", "sampler=tpe", "trials=3", "seed=1", f"warm_start={earlier}")
    rows = read_ledger(later)
    warm = [r for r in rows if r.warm_start]
    own = [r for r in rows if not r.warm_start]
    assert len(warm) == 6 and [r.trial for r in warm] == list(range(6))
    assert {r.warm_start for r in warm} == {f"{earlier}#{n}" for n in range(6)}
    assert all(r.clock_end is None for r in warm)  # the new run's clock starts at 0
    assert len(own) == 3 and all(r.finished for r in own) and min(r.trial for r in own) == 6
    assert not any(r.finished for r in warm)
    # the earlier values are the earlier run's, row for row
    before = {r.trial: r for r in read_ledger(earlier)}
    assert all(r.val_acc == before[int(r.warm_start.rsplit("#", 1)[1])].val_acc for r in warm)
    # TPE drew from the six finished trials: a cold start of the same seed draws otherwise
    cold = read_ledger(_replay(tmp_path / "cold", "sampler=tpe", "trials=3", "seed=1"))
    assert [r.point for r in own] != [r.point for r in cold]
    # run again (finished) and extended: the earlier trials are never added twice
    _replay(later, "sampler=tpe", "trials=3", "seed=1", f"warm_start={earlier}")
    shutil.rmtree(earlier)  # a run that started needs the earlier folder no more
    _replay(later, "sampler=tpe", "trials=5", "seed=1", f"warm_start={earlier}")
    rows = read_ledger(later)
    assert sum(bool(r.warm_start) for r in rows) == 6 and sum(r.finished for r in rows) == 5
    table = pd.read_csv(later / "results.csv")
    assert table["warm_start"].notna().sum() == 6
    from coatsearch.report import build_report

    page = build_report(later).read_text()
    assert "warm start" in page and "from an earlier run" in page


@pytest.mark.slow
def test_the_cli_takes_warm_start_and_says_the_runs_own_compute(tmp_path, earlier4):
    earlier = earlier4
    sets = [arg for item in SUBSPACE[:2] for arg in ("--set", item)]
    result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", "--table", TABLE, *sets, "--set", "trials=2",
                                      "--warm-start", str(earlier), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "replayed: 2 trials" in result.output  # the four earlier ones cost this run nothing


@pytest.mark.parametrize(("override", "says"), [
    ("params.split.choices=[1,2]", "outside this space's split"),
    ("train.lr=0.01", "train.lr"),
    ("objectives=[val_acc]", "objectives"),
    ("params.depth_multiplier.choices=[1,2]", None),  # a wider space shares them
])
def test_spaces_that_cannot_share_trials_are_refused_in_one_line(tmp_path, earlier4, override, says):
    earlier = earlier4
    out = tmp_path / "b"
    space = load_space(f"{TABLE}/space.yaml", [*SUBSPACE, override, f"warm_start={earlier}", "table=null",
                                               "backend=optuna"])
    plan = compile_space(space, check_data=False)
    if says is None:
        assert len(warm_rows(plan, out)) == 4
        return
    sets = [arg for item in [*SUBSPACE[:2], override] for arg in ("--set", item)]
    result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", "--table", TABLE, *sets,
                                      "--warm-start", str(earlier), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert says in result.output and "warm_start" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    sets = [arg for item in SUBSPACE[:2] for arg in ("--set", item)]
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", "--table", TABLE, *sets, "--warm-start", str(folder),
                                          "--out", str(tmp_path / "b")])
        assert result.exit_code == 2 and "not a run directory" in result.output, result.output
    assert not (tmp_path / "b").exists()
    # the dry run makes the run's checks: the same line, before any candidate is timed
    result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", *sets, "--warm-start", str(tmp_path / "empty"),
                                      "--dry-run"])
    assert result.exit_code == 2 and "not a run directory" in result.output, result.output


def test_a_relative_warm_start_in_a_space_file_is_taken_from_its_folder(tmp_path):
    (tmp_path / "spaces").mkdir()
    path = tmp_path / "spaces" / "s.yaml"
    path.write_text("study: s\nbase: coatnet-0\ntrials: 1\nwarm_start: ../runs/a\n")
    assert load_space(path).warm_start == str((tmp_path / "runs" / "a").absolute())


def _earlier_tiny_run(folder: Path) -> list[TrialRow]:
    """A finished run of the tiny space, written as `coatsearch run` writes one."""
    plan = compile_space(space_from_dict({**TINY_SPACE, "sampler": "random", "trials": 3,
                                          "params": {"split": {"choices": [1, 2]}}}), check_data=False)
    folder.mkdir()
    (folder / "space.yaml").write_text(saved_space(plan).to_yaml())
    rows = [TrialRow(n, Status.COMPLETE, sampled={"split": 1 + n % 2}, val_acc=0.5 + n / 10, flops=1_000_000 + n,
                     fidelity=2, max_fidelity=2, wall_time=10.0) for n in range(3)]
    rows.append(TrialRow(3, Status.INFEASIBLE, sampled={"split": 2}))  # not handed over: nothing measured
    write_table(rows, folder / "results.csv")
    return rows


@pytest.mark.slow
def test_the_optuna_backend_adds_them_to_its_study_as_finished_trials_once(tmp_path, monkeypatch):
    import coatsearch.search.optuna_backend as backend

    earlier = tmp_path / "a"
    _earlier_tiny_run(earlier)
    seen: list[int] = []

    def fake_trial(plan, number, params, report=None, threads=None):
        study = optuna.load_study(study_name=plan.study, storage=f"sqlite:///{tmp_path / 'b' / 'study.db'}")
        seen.append(sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials))
        return TrialRow(number, Status.COMPLETE, sampled=params, val_acc=0.6, flops=1_000_000, fidelity=2,
                        max_fidelity=2)

    monkeypatch.setattr(backend, "run_trial", fake_trial)
    monkeypatch.setattr("coatsearch.runner.run_estimate", lambda plan, rows: TrialEstimates())  # times no network
    space = space_from_dict({**TINY_SPACE, "sampler": "tpe", "trials": 2, "warm_start": str(earlier)})
    for _ in range(2):  # the second run finds the study finished: nothing added again
        run_study(compile_space(space, check_data=False), tmp_path / "b", console=Console(file=io.StringIO()))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'b' / 'study.db'}")
    warm = [t for t in study.trials if "warm_start" in t.user_attrs]
    assert [t.number for t in warm] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in warm)
    assert [t.values for t in warm] == [[0.5, 1_000_000], [0.6, 1_000_001], [0.7, 1_000_002]]
    assert [t.user_attrs["val_acc"] for t in warm] == [0.5, 0.6, 0.7]  # optuna-dashboard filters them too
    assert seen == [3, 4]  # the first new trial already saw the three earlier ones
    table = pd.read_csv(tmp_path / "b" / "results.csv")
    assert len(table) == 5 and table["warm_start"].notna().sum() == 3


@pytest.mark.slow
def test_the_ray_searcher_is_given_them_as_finished_trials(tmp_path):
    from coatsearch.search.ray_backend import RayBackend

    earlier = tmp_path / "a"
    _earlier_tiny_run(earlier)
    plan = compile_space(space_from_dict({**TINY_SPACE, "sampler": "tpe", "trials": 2, "backend": "ray",
                                          "warm_start": str(earlier)}), check_data=False)
    out = tmp_path / "b"
    out.mkdir()
    ray = RayBackend(plan, out)
    ray.warm(warm_rows(plan, out))
    ray.warm(warm_rows(plan, out))  # a resumed run adds nothing
    rows = read_ledger(out)
    assert len(rows) == 3 and ray._todo(rows) == 2
    searcher = ray._searcher(rows)
    assert [t.values for t in searcher._ot_study.trials] == [[0.5, 1_000_000], [0.6, 1_000_001], [0.7, 1_000_002]]


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.usefixtures("no_leaked_ray")
def test_a_ray_run_trains_only_its_own_trials_after_the_earlier_ones(tmp_path, monkeypatch):
    earlier = tmp_path / "a"
    _earlier_tiny_run(earlier)
    monkeypatch.setattr("coatsearch.runner.run_estimate", lambda plan, rows: TrialEstimates())  # times no network
    space = space_from_dict({**TINY_SPACE, "sampler": "tpe", "trials": 1, "backend": "ray", "warm_start": str(earlier)})
    outcome = run_study(compile_space(space, check_data=False), tmp_path / "b", console=Console(file=io.StringIO()))
    rows = read_ledger(tmp_path / "b")
    assert [(r.trial, bool(r.warm_start)) for r in rows] == [(0, True), (1, True), (2, True), (3, False)]
    assert rows[-1].finished and outcome.finished == 1
