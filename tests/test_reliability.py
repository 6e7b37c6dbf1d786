"""What a search reports is exactly what it ran: every grid point once on every backend,
at any concurrency, across kill -9, Ctrl-C and resume; no process of ours left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from coatsearch.results import read_table
from coatsearch.search.reaper import processes_using, ray_folder
from tests.conftest import TINY_SPACE, messages
from tests.survivors import run_counting_survivors

#: Ray runs in one test process at a time (see pyproject's addopts): the tests that start it
#: share the "ray" group; the optuna runs go to whichever process is free.
RAY = pytest.mark.xdist_group("ray")

#: The 2x3 grid: split {1, 2} x seed {0, 1, 2}, six trials.
GRID = {"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1, 2]}}
POINTS = {(s, seed) for s in (1, 2) for seed in (0, 1, 2)}


def _space(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    data.update(params=GRID, trials=6, sampler="grid", train={"epochs": 2, "batch_size": 64})
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _command(space: Path, out: Path, backend: str, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "coatsearch.cli", "run", str(space), "--out", str(out), "--backend", backend,
            "--set", f"concurrency={concurrency}"]


def _finished(out: Path):
    path = out / "results.csv"
    if not path.exists():
        return None
    try:
        table = read_table(path)
    except Exception:  # being replaced right now
        return None
    return table[table["status"] == "complete"]


def _assert_every_point_once(out: Path):
    table = read_table(out / "results.csv")
    points = list(zip(table["param.split"], table["param.seed"]))
    assert len(table) == 6 and set(points) == POINTS, points
    assert (table["status"] == "complete").all(), table["status"].tolist()
    return table


def _wait_for_no_processes(out: Path, seconds: float = 10.0) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline:
        left = processes_using(ray_folder(out))
        if not left:
            return []
        time.sleep(0.25)
    return processes_using(ray_folder(out))


@RAY
@pytest.mark.slow
def test_the_ray_grid_runs_every_point_once_two_at_a_time(tmp_path):
    # (one at a time: test_search's test_both_backends_run_the_same_trials)
    out = tmp_path / "run"
    # which points run, not how well they train: one epoch each
    space = _space(tmp_path, train={"epochs": 1, "batch_size": 64})
    result = subprocess.run(_command(space, out, "ray", 2), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_every_point_once(out)
    assert _wait_for_no_processes(out) == []


# optuna at 1 runs trials in the killed process itself; at 2 in workers that must die with it.
# (ray at 2, killed with trials in flight and run again: test_no_process_outlives_a_ray_run_stopped_mid_trial)
@pytest.mark.parametrize("backend,concurrency", [("optuna", 1), ("optuna", 2)])
@pytest.mark.slow
def test_kill_9_after_two_trials_then_rerun(tmp_path, backend, concurrency):
    out = tmp_path / "run"
    # two epochs keep a trial in flight well past the 0.1 s poll that sends the kill
    command = _command(_space(tmp_path, train={"epochs": 2, "batch_size": 32}), out, backend, concurrency)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            done = _finished(out)
            if done is not None and len(done) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("two trials did not finish in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _rerun_keeps(command, out, _finished(out))


def _rerun_keeps(command: list[str], out: Path, before: pd.DataFrame) -> None:
    """The same command again finishes the run, every point once; the trials finished before
    the stop are there, unchanged: they did not run again."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    table = _assert_every_point_once(out)
    for _, row in before.iterrows():
        again = table[table["trial"] == row["trial"]].iloc[0]
        for column in ("point", "val_acc", "wall_time", "worker", "history"):
            assert again[column] == row[column], column


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
@RAY
@pytest.mark.slow
def test_no_process_outlives_a_ray_run_stopped_mid_trial(tmp_path, stop):
    """Counted as a subreaper counts them: every descendant, whatever its name, 10 s after
    the driver ended; kill -9 leaves the driver no chance, so the watchdog must do it."""
    out = tmp_path / "run"
    command = _command(_space(tmp_path, train={"epochs": 3, "batch_size": 32}), out, "ray", 2)
    result = run_counting_survivors(command, wait=10, stop=stop, when=(out / "ledger.jsonl", 1))
    assert result["returncode"] == -stop if stop == signal.SIGKILL else 128 + stop, result["stderr"]
    assert result["alive"] == []
    assert not ray_folder(out).exists()
    if stop == signal.SIGKILL:  # run again after kill -9 with trials in flight
        before = _finished(out)  # results.csv may lag the ledger's first row at the kill
        _rerun_keeps(command, out, before if before is not None else pd.DataFrame(columns=["trial"]))
        assert _wait_for_no_processes(out) == []


def _stop_after_a_trial(command: list[str], out: Path, stop: int) -> tuple[subprocess.Popen, str]:
    """Start ``command``, send it ``stop`` half a second after its first trial finished
    (into the next one), and return the ended process and its stderr."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = _finished(out)
        if done is not None and len(done) >= 1:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    return proc, stderr


def _resume_keeps(out: Path, finished: pd.DataFrame) -> None:
    """``coatsearch resume`` finishes the run, every point once, the finished trials kept."""
    result = subprocess.run([sys.executable, "-m", "coatsearch.cli", "resume", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    final = _assert_every_point_once(out)
    for _, row in finished.iterrows():
        assert final[final["trial"] == row["trial"]].iloc[0]["val_acc"] == row["val_acc"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    command = _command(_space(tmp_path, train={"epochs": 4, "batch_size": 32}), out, "optuna", 1)
    proc, stderr = _stop_after_a_trial(command, out, signal.SIGINT)
    assert proc.returncode == 128 + signal.SIGINT
    assert stderr.strip().splitlines()[-1] == f"error: stopped; resume with: coatsearch resume {out}"
    table = read_table(out / "results.csv")
    assert "interrupted" in set(table["status"]) and (out / "report.html").exists()
    finished = table[table["status"] == "complete"]
    _resume_keeps(out, finished)


@pytest.mark.slow
def test_sigterm_with_two_workers_is_one_line_and_resume_runs_every_point_once(tmp_path):
    """SIGTERM mid-trial at concurrency 2: the driver's and the worker's trials in flight
    both end interrupted, with no traceback from either process, and run again on resume.
    With no retries left, a worker's trial that merely died would count as a failed trial."""
    out = tmp_path / "run"
    command = _command(_space(tmp_path, train={"epochs": 3, "batch_size": 32}, retries=0), out, "optuna", 2)
    # the driver into its next trial, the worker still in its first
    proc, stderr = _stop_after_a_trial(command, out, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    said = messages(stderr)
    assert said == [f"error: stopped; resume with: coatsearch resume {out}"], stderr[-2000:]
    finished = _finished(out)
    _resume_keeps(out, finished)


@pytest.mark.slow
def test_two_runs_on_a_fresh_run_dir_at_once_share_the_study(tmp_path):
    out = tmp_path / "run"
    command = _command(_space(tmp_path, train={"epochs": 1, "batch_size": 64}), out, "optuna", 1)
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
    _assert_every_point_once(out)


def test_a_stop_swallowed_by_a_finalizer_is_raised_again(monkeypatch):
    """A worker's SIGTERM can land in a finalizer, where Python prints the KeyboardInterrupt
    as "Exception ignored" and drops it; the worker's hook sends the signal again."""
    import weakref

    from coatsearch.search.optuna_backend import stop_on_sigterm

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    previous = signal.getsignal(signal.SIGTERM)

    class Collected:
        pass

    def finalizer(_ref):  # run as the object is collected: a stop raised here is swallowed
        raise KeyboardInterrupt

    try:
        stop_on_sigterm()
        obj = Collected()
        ref = weakref.ref(obj, finalizer)
        with pytest.raises(KeyboardInterrupt):
            del obj
            assert ref() is None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the signal, sent again, lands in ordinary code
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
