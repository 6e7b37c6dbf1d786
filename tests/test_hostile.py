"""Hostile and careless inputs beyond the corpus's one-line refusals: what a run writes
(only its own folder, never through a link, no password), and what a full disk or a
replaced study database leaves. The corpus (tests/test_corpus.py) holds the refusals;
tests/test_reliability.py how a run stops (kill -9, SIGTERM, Ctrl-C twice, a closed
terminal)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.errors import CoatsearchError
from coatsearch.files import load_yaml, write_atomic
from coatsearch.results import read_table
from coatsearch.rundir import MARKER, claim
from coatsearch.urls import masked, password_problem, without_password
from tests.conftest import messages
from tests.grid_runs import finished, finishes_keeping, resume_command, run_command, tiny_space
from tests.survivors import run_counting_survivors

runner = CliRunner()


# --------------------------------------------------------------------------- YAML, URLs, folders
def test_yaml_keeps_merge_keys_and_shared_aliases():
    text = "base: &b {lr: 0.1, epochs: 2}\nrun:\n  <<: *b\n  lr: 0.2\nlist: [*b, *b]\n"
    data = load_yaml(text, "x.yaml", CoatsearchError)
    assert data["run"] == {"lr": 0.2, "epochs": 2} and data["list"] == [data["base"], data["base"]]


def test_yaml_counts_aliases_as_expanded():
    layers = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]  # 10**6 values
    with pytest.raises(CoatsearchError, match="more than 200,000 values"):
        load_yaml("\n".join(layers), "x.yaml", CoatsearchError)
    assert load_yaml("\n".join(layers[:4]), "x.yaml", CoatsearchError)["a3"][0][0][0] == list(range(1, 11))


def test_passwords_are_masked_whole():
    url = "postgresql+psycopg://me:p@ss/w:rd@db.example:5432/study?sslmode=require"
    assert "p@ss" not in masked(url) and "rd" not in masked(url).split("@", 1)[0]
    assert masked(url) == "postgresql+psycopg://me:***@db.example:5432/study?sslmode=require"
    assert without_password(url) == "postgresql+psycopg://me@db.example:5432/study?sslmode=require"
    assert password_problem(url) is not None and password_problem("postgresql://me:p%40ss@h/db") is None
    assert masked("sqlite:////tmp/a@b.db") == "sqlite:////tmp/a@b.db"


def test_write_atomic_replaces_a_link_and_keeps_the_old_file_on_failure(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's\n")
    (tmp_path / "run.txt").symlink_to(mine)
    write_atomic(tmp_path / "run.txt", "the run's\n")
    assert mine.read_text() == "the user's\n" and not (tmp_path / "run.txt").is_symlink()
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError) as failed:
        write_atomic(tmp_path / "dir", "x")
    assert failed.value.filename == str(tmp_path / "dir") and sorted(os.listdir(tmp_path)) == ["dir", "mine.txt", "run.txt"]


def test_workers_claiming_one_new_folder_at_once_all_get_it(tmp_path):
    folder, errors = tmp_path / "runs" / "shared", []

    def take() -> None:
        try:
            claim(folder)
        except CoatsearchError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and (folder / MARKER).is_file()


def test_a_marker_written_while_another_worker_looks_makes_the_folder_its_own(tmp_path, monkeypatch):
    """The race behind two workers claiming one folder: the other worker writes the marker
    just as this one lists the folder. The folder is still a run's own."""
    from coatsearch import rundir

    folder = tmp_path / "shared"
    folder.mkdir()
    listdir = os.listdir

    def listing_after_the_other_worker(path):
        (folder / MARKER).write_text("coatsearch run folder\n")
        return listdir(path)

    monkeypatch.setattr(rundir.os, "listdir", listing_after_the_other_worker)
    assert rundir.is_own(folder)


# --------------------------------------------------------------------------- the report's files
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    space = tiny_space(tmp, trials=1, params={"seed": {"choices": [0]}}, train={"epochs": 1, "batch_size": 64})
    result = runner.invoke(app, ["run", str(space), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_a_report_replaces_a_link_instead_of_writing_through_it(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    mine = tmp_path / "mine.html"
    mine.write_text("<p>mine</p>\n")
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(mine)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert mine.read_text() == "<p>mine</p>\n"
    assert not (run / "report.html").is_symlink() and (run / "report.html").stat().st_size > 1000


def test_a_report_elsewhere_leaves_the_folder_s_tables_alone(finished_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("pareto.csv", "top.csv", "effects.csv", "comparisons.csv", "summary.csv"):
        (mine / name).write_text("the user's own\n")
    result = runner.invoke(app, ["report", str(finished_run), "-o", str(mine / "report.html")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in mine.iterdir() if p.read_text() != "the user's own\n") == ["report.html"]


# --------------------------------------------------------------------------- runs stopped part-way
def _rows(out: Path) -> int:
    try:
        return len((out / "results.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


# --------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs mounted at tmp_path/disk (root only; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small disk needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()[:200]}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fault_after_the_first_row(out: Path, space: Path, fault: Callable[[], None]) -> tuple[int, list[str]]:
    """Run ``space`` into ``out``, do ``fault`` once its first row is written, and return
    the run's exit code and its stderr's messages."""
    proc = subprocess.Popen(run_command(space, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and _rows(out) < 1 and proc.poll() is None:
            time.sleep(0.1)
        fault()
        _, stderr = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc.returncode, messages(stderr)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_ends_in_one_line_and_resumes(tmp_path, small_disk):
    out = small_disk / "run"
    saved: list[bytes] = []

    def fill_the_disk() -> None:
        saved.append((out / "space.yaml").read_bytes())
        with open(small_disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):  # nothing left to flush
            while True:
                filler.write(b"\0" * 65536)

    code, lines = _fault_after_the_first_row(out, tiny_space(tmp_path, train={"epochs": 1, "batch_size": 64}),
                                             fill_the_disk)
    assert code == 2 and len(lines) == 1, lines
    assert "no space left on the device" in lines[0] and f"coatsearch resume {out}" in lines[0]
    assert (out / "space.yaml").read_bytes() == saved[0]
    (small_disk / "filler").unlink()
    before = finished(out)
    assert before is not None and len(before) >= 1
    finishes_keeping(resume_command(out), out, before, in_process=True)


@pytest.mark.slow
def test_a_study_database_replaced_mid_run_ends_in_one_line_and_resumes(tmp_path):
    """A checkout or a copy over ``study.db`` while a run writes to it (SQLite then refuses
    every write): one line that says what happened and how to go on, not Optuna's traceback
    ending in "Should not reach"; the resume finishes the study."""
    out = tmp_path / "run"
    database = out / "study.db"

    def replace_the_database() -> None:  # what a checkout or a copy over it does
        shutil.copyfile(database, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", database)

    code, lines = _fault_after_the_first_row(out, tiny_space(tmp_path, train={"epochs": 1, "batch_size": 64}),
                                             replace_the_database)
    assert code == 2 and len(lines) == 1, lines
    assert f"{database}: the study database refused a write" in lines[0]
    assert f"coatsearch resume {out}" in lines[0]
    before = finished(out)
    assert before is not None and len(before) >= 1
    finishes_keeping(resume_command(out), out, before, in_process=True)


# --------------------------------------------------------------------------- workers and the study's storage
@pytest.mark.slow
def test_a_worker_ends_with_a_driver_killed_while_it_starts(tmp_path):
    """kill -9 of the driver a moment after it spawned its worker (still importing torch):
    10 s later nothing of the run is alive (the worker is tied to the driver from its
    first instruction, not after its imports)."""
    out = tmp_path / "run"
    command = run_command(tiny_space(tmp_path, train={"epochs": 3, "batch_size": 32}), out, "--set", "concurrency=2")
    result = run_counting_survivors(command, wait=10, stop=signal.SIGKILL, when=(out / "run.log", 1), delay=0.7,
                                    timeout=300)
    assert result["returncode"] == -signal.SIGKILL, result["stderr"][-3000:]
    assert result["alive"] == []


@pytest.mark.slow
def test_a_failed_trial_is_one_line(tmp_path):
    """Optuna's nine-line warning with a traceback for each failed trial becomes one line."""
    space = tiny_space(tmp_path, trials=1, params={"data.train_size": {"choices": [100_000]}},
                       train={"epochs": 1, "batch_size": 64})
    result = subprocess.run(run_command(space, tmp_path / "run"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [line for line in result.stderr.splitlines() if "failed" in line]
    assert len(failed) == 1 and failed[0].startswith("trial 0 [data.train_size=100000] "), result.stderr[-3000:]
    assert ": failed (DataError: train_size: 100000 is more than" in failed[0]
    assert "Traceback" not in result.stderr
    assert read_table(tmp_path / "run" / "results.csv")["reason"].iloc[0]


def test_the_sqlite_storage_keeps_its_lock_across_pickling(tmp_path):
    """A copy of the storage unpickled in another process takes the write lock when a
    trial's state changes, as the original does; the constructor takes RDBStorage's arguments."""
    import pickle

    import optuna
    from sqlalchemy import event

    from coatsearch.search.optuna_storage import SqliteStudyStorage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = SqliteStudyStorage(url, {"connect_args": {"timeout": 5}}, False, heartbeat_interval=2, grace_period=6)
    copy = pickle.loads(pickle.dumps(storage))
    statements: list[str] = []
    event.listen(copy.engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=copy, study_name="s")
    trial = study.ask()
    study.tell(trial, 1.0)
    assert "BEGIN IMMEDIATE" in statements and copy.engine_kwargs == {"connect_args": {"timeout": 5}}


@pytest.mark.slow
def test_a_locked_study_is_refused_within_seconds(finished_run, tmp_path, monkeypatch):
    import sqlite3

    from coatsearch.search import optuna_storage

    assert optuna_storage.LOCK_WAIT_S <= 10  # what users wait; the test waits 1 s
    monkeypatch.setattr(optuna_storage, "LOCK_WAIT_S", 1)
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    holder = sqlite3.connect(run / "study.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        result = runner.invoke(app, ["resume", str(run)])
        took = time.monotonic() - started
    finally:
        holder.close()
    assert result.exit_code == 2, result.output
    assert "study.db: the study database is locked by another process (waited up to 1 s)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and took < 30


@pytest.mark.parametrize("quiet", [True, False])
def test_a_heartbeat_that_cannot_be_written_is_skipped(tmp_path, quiet):
    """A heartbeat written while the database refuses writes (here: locked by another
    connection; a full disk likewise) raises from Optuna's storage, and so would print a
    traceback from its heartbeat thread; the study storage skips it instead."""
    import sqlite3

    import optuna
    from optuna.storages import RDBStorage

    from coatsearch.search.optuna_storage import SqliteStudyStorage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    kind = SqliteStudyStorage if quiet else RDBStorage
    storage = kind(url, {"connect_args": {"timeout": 0.1}}, False, heartbeat_interval=2, grace_period=6)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trial = optuna.create_study(storage=storage, study_name="s").ask()
    holder = sqlite3.connect(tmp_path / "study.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        if quiet:
            storage.record_heartbeat(trial._trial_id)
        else:
            with pytest.raises(optuna.exceptions.StorageInternalError):
                storage.record_heartbeat(trial._trial_id)
    finally:
        holder.rollback()
        holder.close()


def test_sqlalchemy_error_logs_stay_off_the_terminal():
    """SQLAlchemy logs "Error closing cursor" (with a traceback) when a stop signal lands in
    a query; with no logging configured Python would print it. Storage use silences it."""
    code = ("import logging, sys\n"
            "if sys.argv[1] == 'quiet':\n"
            "    from coatsearch.search.optuna_storage import quiet_sqlalchemy; quiet_sqlalchemy()\n"
            "logging.getLogger('sqlalchemy.pool.impl.QueuePool').error('Error closing cursor')\n")
    loud = subprocess.run([sys.executable, "-c", code, "loud"], capture_output=True, text=True, timeout=60)
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True, text=True, timeout=60)
    assert "Error closing cursor" in loud.stderr
    assert quiet.returncode == 0 and quiet.stderr == ""
