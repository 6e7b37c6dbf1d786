"""What a search reports is exactly what it ran: every grid point once on every backend,
at any concurrency, across kill -9, SIGTERM, Ctrl-C (twice: one stop), a closed terminal
and resume; no process of ours left behind."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coatsearch.results import read_table
from coatsearch.search.reaper import processes_using, ray_folder
from tests.conftest import messages
from tests.grid_runs import assert_every_point_once, finished, finishes_keeping, resume_command, run_command, tiny_space
from tests.survivors import run_counting_survivors

#: Ray runs in one test process at a time (see pyproject's addopts): the tests that start it
#: share the "ray" group; the optuna runs go to whichever process is free.
RAY = pytest.mark.xdist_group("ray")


def _command(space: Path, out: Path, backend: str, concurrency: int) -> list[str]:
    return run_command(space, out, "--backend", backend, "--set", f"concurrency={concurrency}")


def _wait_for_no_processes(out: Path, seconds: float = 10.0) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline:
        left = processes_using(ray_folder(out))
        if not left:
            return []
        time.sleep(0.25)
    return processes_using(ray_folder(out))


# optuna at 1 runs trials in the killed process itself; at 2 in workers that must die with it.
# (ray at 2, killed with trials in flight and run again: test_no_process_outlives_a_ray_run_stopped_mid_trial)
@pytest.mark.parametrize("backend,concurrency", [("optuna", 1), ("optuna", 2)])
@pytest.mark.slow
def test_kill_9_after_two_trials_then_rerun(tmp_path, backend, concurrency):
    out = tmp_path / "run"
    # two epochs keep a trial in flight well past the 0.1 s poll that sends the kill
    command = _command(tiny_space(tmp_path, train={"epochs": 2, "batch_size": 32}), out, backend, concurrency)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            done = finished(out)
            if done is not None and len(done) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("two trials did not finish in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finishes_keeping(command, out, finished(out), in_process=concurrency == 1)


def _running_trials(out: Path) -> int:
    """Trials the study still holds as RUNNING: each would go stale and use up a retry."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    return sum(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
@RAY
@pytest.mark.slow
def test_no_process_outlives_a_ray_run_stopped_mid_trial(tmp_path, stop):
    """Counted as a subreaper counts them: every descendant, whatever its name, 10 s after
    the driver ended; kill -9 leaves the driver no chance, so the watchdog must do it."""
    out = tmp_path / "run"
    command = _command(tiny_space(tmp_path, train={"epochs": 3, "batch_size": 32}), out, "ray", 2)
    result = run_counting_survivors(command, wait=10, stop=stop, when=(out / "ledger.jsonl", 1))
    assert result["returncode"] == (-stop if stop == signal.SIGKILL else 128 + stop), result["stderr"][-3000:]
    if stop == signal.SIGTERM:
        said = messages(result["stderr"])
        assert said[-1:] == [f"error: stopped; resume with: coatsearch resume {out}"], result["stderr"][-3000:]
    assert result["alive"] == []
    assert not ray_folder(out).exists()
    if stop == signal.SIGKILL:  # run again after kill -9 with trials in flight
        before = finished(out)  # results.csv may lag the ledger's first row at the kill
        finishes_keeping(command, out, before)
        assert _wait_for_no_processes(out) == []


def _ctrl_c_after_a_trial(command: list[str], out: Path, presses: int) -> tuple[subprocess.Popen, str]:
    """Start ``command``, press Ctrl-C (SIGINT) ``presses`` times 0.15 s apart, starting half
    a second after its first trial finished (into the next one), and return the ended
    process and its stderr."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            done = finished(out)
            if done is not None and len(done) >= 1:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        for press in range(presses):
            time.sleep(0.15 if press else 0)
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc, stderr


@pytest.mark.slow
def test_ctrl_c_twice_is_one_clean_stop_and_resume_finishes(tmp_path):
    """Two Ctrl-C 0.15 s apart (an impatient user): the same stop as one, one line and
    nothing else said, the trial in flight interrupted (not left RUNNING), the report
    written; ``coatsearch resume`` then runs what is left."""
    out = tmp_path / "run"
    command = _command(tiny_space(tmp_path, train={"epochs": 3, "batch_size": 32}), out, "optuna", 1)
    proc, stderr = _ctrl_c_after_a_trial(command, out, presses=2)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert messages(stderr) == [f"error: stopped; resume with: coatsearch resume {out}"], stderr[-3000:]
    assert _running_trials(out) == 0
    table = read_table(out / "results.csv")
    assert "interrupted" in set(table["status"]) and (out / "report.html").exists()
    finishes_keeping(resume_command(out), out, table[table["status"] == "complete"], in_process=True)


@pytest.mark.slow
def test_a_closed_terminal_at_two_workers_is_one_line_and_resume_runs_every_point_once(tmp_path):
    """SIGHUP (a closed terminal; SIGTERM takes the same path, its exit code checked on Ray
    above) mid-trial at concurrency 2: exit 129, one line, no traceback from either
    process, nothing alive; the trials in flight end interrupted (none left RUNNING) and
    run again on resume. With no retries left, a worker's trial that merely died would
    count as a failed trial and not run again."""
    out = tmp_path / "run"
    command = _command(tiny_space(tmp_path, train={"epochs": 3, "batch_size": 32}, retries=0), out, "optuna", 2)
    # half a second after the first row, the driver is in its next trial, the worker in its first
    result = run_counting_survivors(command, wait=10, stop=signal.SIGHUP, when=(out / "results.csv", 2), timeout=400,
                                    delay=0.5)
    assert result["returncode"] == 128 + signal.SIGHUP, result["stderr"][-3000:]
    assert messages(result["stderr"]) == [f"error: stopped; resume with: coatsearch resume {out}"], \
        result["stderr"][-3000:]
    assert result["alive"] == []
    assert _running_trials(out) == 0
    assert "interrupted" in set(read_table(out / "results.csv")["status"])
    finishes_keeping(resume_command(out), out, finished(out))


@pytest.mark.slow
def test_two_runs_on_a_fresh_run_dir_at_once_share_the_study(tmp_path):
    out = tmp_path / "run"
    command = _command(tiny_space(tmp_path, train={"epochs": 1, "batch_size": 64}), out, "optuna", 1)
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
    assert_every_point_once(out)


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
