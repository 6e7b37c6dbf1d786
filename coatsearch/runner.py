"""Running a study: a plan in, a run directory with results out, on either backend.

`run_study` owns the run directory (see `coatsearch.results`), the progress display and
the stop signals; the backend only runs trials and keeps its ledger. The results table is
rebuilt from the ledger at the start and after every trial, so it always says exactly what
ran, and a damaged table heals on the next run.

Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal) stop a run cleanly: trials in flight are marked
``interrupted``, the table and Pareto front are written, and `RunInterrupted` says how to
resume. Nothing that finished is lost or run again.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.markup import escape

from coatsearch.analysis import Analysis, Design, analyse
from coatsearch.analysis.overview import DEFAULT_OBJECTIVES
from coatsearch.analysis.ranking import front_objectives, pareto_set
from coatsearch.errors import CoatsearchError, first_line, os_reason
from coatsearch.files import write_atomic
from coatsearch.results import write_table
from coatsearch.rundir import check, claim, open_log
from coatsearch.search import Backend, SearchPlan, TrialRow, make_backend
from coatsearch.search.machine import check_machine
from coatsearch.search.progress import RunProgress, TrialEstimates, estimate_line, run_estimate
from coatsearch.search.saved_space import check_backend, saved_space, saved_space_note
from coatsearch.search.storage_url import safe_url
from coatsearch.status import Status
from coatsearch.warm_start import warm_rows

if TYPE_CHECKING:
    from coatsearch.search.mlflow_log import MlflowLog

log = logging.getLogger("coatsearch")


class RunInterrupted(Exception):
    """The run was stopped by a signal; what finished is written. ``signal`` is its number."""

    def __init__(self, run_dir: Path, signum: int) -> None:
        super().__init__(f"stopped; resume with: coatsearch resume {run_dir}")
        self.run_dir, self.signum = run_dir, signum


@dataclass(frozen=True)
class StudyOutcome:
    """A study run to its target (or found finished): where its files are, how many trials
    finished, and its results ``table`` as written, with the table's `Analysis` under the
    run's objectives (computed on first use), so nothing after the run reads back what it
    has just written. ``note`` says what the run did not do as asked."""

    run_dir: Path
    table_path: Path
    finished: int
    already_done: bool
    pareto_path: Path
    note: str = ""
    table: pd.DataFrame | None = None
    #: the space's params as written and its sampler: the experiment's design
    params: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES

    @functools.cached_property
    def analysis(self) -> Analysis | None:
        """The results table's analysis (None for an outcome made without its table)."""
        if self.table is None:
            return None
        return analyse(self.table, Design.of(self.table, self.params, self.sampler), self.objectives)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory, or say in one line why it cannot be used: see
    `coatsearch.rundir` (the folder must be the run's own, with no link or special file
    where a run file goes)."""
    claim(run_dir)
    try:  # a probe of its own: workers starting together on one directory must not share one
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CoatsearchError(f"--out {run_dir}: the run directory is not writable ({os_reason(exc)})") from None


class _RunLog(logging.FileHandler):
    """The run's log, appended to and never through a link; a write that fails (a full
    disk) is dropped, not printed with a traceback: the run's own error says what failed."""

    def _open(self) -> Any:
        return open(open_log(Path(self.baseFilename)), "a", encoding="utf-8", closefd=True)

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _Once(logging.Filter):
    """Each message once per run: every trial's fit notes the same data and device."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith("coatsearch.train") and message in self.seen:
            return False
        self.seen.add(message)
        return True


def _setup_log(run_dir: Path) -> logging.Handler:
    # a library's logging.config (Ray's, when it configures its own loggers) disables every
    # logger that exists at that moment, ours included; the run's record must not depend on it
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (name == "coatsearch" or name.startswith("coatsearch.")) and isinstance(logger, logging.Logger):
            logger.disabled = False
    handler = _RunLog(run_dir / "run.log", delay=True)
    handler.addFilter(_Once())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


#: The signals that stop a run cleanly: Ctrl-C, ``kill``, and a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGHUP handled like Ctrl-C (a `KeyboardInterrupt`); the signals seen
    are recorded.

    Only the first signal raises: a second one while the run is stopping (Ctrl-C pressed
    twice) is the same request, and raising again would interrupt the clean stop itself,
    or land in a garbage-collection callback, where Python prints it as "Exception
    ignored" and drops it. For the same reason a first signal that arrives inside such a
    callback is sent again a moment later, outside it, instead of being lost."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if seen:
            seen.append(signum)
            return
        if frame is not None and _in_gc_callback(frame):
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        seen.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield seen
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _in_gc_callback(frame: Any) -> bool:
    """Whether ``frame`` runs inside one of the garbage collector's callbacks, where an
    exception is printed and dropped rather than raised."""
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    codes |= {getattr(getattr(cb, "__func__", None), "__code__", None) for cb in gc.callbacks}
    codes.discard(None)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def run_study(
    plan: SearchPlan,
    out: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> StudyOutcome:
    """Run a study to its target of finished trials, resuming whatever is already there."""
    console = console or Console(stderr=True)
    run_dir = Path(out) if out else Path("runs") / plan.study
    for warning in check_machine(plan, address):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    check(run_dir)  # before the backend reads anything there
    check_backend(plan, run_dir)
    # an earlier run's trials that cannot be shared are refused here; a run directory that
    # holds its space already took them when it started (the earlier folder may be gone since)
    warm = [] if os.path.isfile(run_dir / "space.yaml") else warm_rows(plan, run_dir)
    backend = make_backend(plan, run_dir, address)
    if warm and not hasattr(backend, "warm"):
        raise CoatsearchError(f"warm_start: the {plan.space.backend} backend cannot take an earlier run's trials")
    try:
        with backend.session():
            return _run_in_session(plan, run_dir, backend, console, warm)
    except (CoatsearchError, RunInterrupted):
        raise
    except Exception as exc:
        if _disk_full(exc):
            raise DiskFull(getattr(exc, "filename", None) or run_dir, run_dir) from None
        if _in_causes(exc, "attempt to write a readonly database"):
            raise StudyDatabaseReadOnly(safe_url(plan.space.storage) if plan.space.storage else run_dir / "study.db",
                                        run_dir) from None
        raise


class DiskFull(CoatsearchError):
    """The disk filled during a run: what finished is in the ledger, and the run resumes
    once there is space."""

    def __init__(self, where: object, run_dir: Path) -> None:
        super().__init__(f"{where}: no space left on the device; free some and resume with: coatsearch resume {run_dir}")


class StudyDatabaseReadOnly(CoatsearchError):
    """SQLite refused a write to the study: its file was replaced or moved under the run
    (a checkout or copy over it) or made read-only. What finished is in the ledger; the
    trial in flight is lost, and runs again on resume as a dead worker's would (using up a
    retry: with none left it counts as failed)."""

    def __init__(self, where: object, run_dir: Path) -> None:
        super().__init__(f"{where}: the study database refused a write (replaced or moved while the run used it, "
                         f"or read-only); put it back in place and resume with: coatsearch resume {run_dir}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _in_causes(exc: BaseException, *phrases: str) -> bool:
    return any(phrase in str(cause) for cause in _causes(exc) for phrase in phrases)


def _disk_full(exc: BaseException) -> bool:
    """A full disk reported by a library in its own words (SQLite: "database or disk is
    full"), or as the cause of another error."""
    if any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT) for c in _causes(exc)):
        return True
    return _in_causes(exc, "disk is full", "No space left on device")


def _run_in_session(plan: SearchPlan, run_dir: Path, backend: Backend, console: Console,
                    warm: list[TrialRow]) -> StudyOutcome:
    prepare_run_dir(run_dir)
    write_space, note = saved_space_note(plan, run_dir)
    table_path, pareto_path = run_dir / "results.csv", run_dir / "pareto.csv"
    target = plan.target_trials

    rows = backend.ledger()
    done = sum(row.finished for row in rows)
    if done >= target or (note and not write_space):  # finished, or asked for fewer trials
        table = _write_outputs(plan, rows, table_path, pareto_path)
        return _outcome(plan, run_dir, done, True, note, table)
    if warm:  # before the space is saved, which says they were taken; once (a ledger that holds them is left)
        backend.warm(warm)
        rows = backend.ledger()
    if write_space:
        write_atomic(run_dir / "space.yaml", saved_space(plan).to_yaml())

    handler = _setup_log(run_dir)
    log.info("study %s: %d/%d trials finished, backend %s", plan.study, done, target, backend.name)
    if warm:
        log.info("warm start: %d trials of %s", sum(r.warm_start is not None for r in rows), plan.space.warm_start)
    started = time.monotonic()
    try:
        with _stop_signals() as seen:
            try:
                progress = _progress(plan, backend, rows, console)
                events = _Events(plan, run_dir, rows, backend.name,
                                 lambda line: progress.print(f"warning: {line}", style="yellow"))

                def on_rows(new_rows: list[TrialRow]) -> None:
                    write_table(new_rows, table_path)
                    progress.on_rows(new_rows)
                    events.on_rows(new_rows)

                with progress:
                    backend.run(on_rows, progress.on_epoch)
            except KeyboardInterrupt:
                rows = backend.ledger()
                _write_outputs(plan, rows, table_path, pareto_path)
                in_flight = sum(row.status == Status.INTERRUPTED for row in rows)
                log.info("interrupted with %d trials in flight", in_flight)
                raise RunInterrupted(run_dir, seen[0] if seen else signal.SIGINT) from None
        log.info("study %s: run ended after %.0f s", plan.study, time.monotonic() - started)
    finally:
        log.removeHandler(handler)
        handler.close()
    rows = backend.ledger()
    table = _write_outputs(plan, rows, table_path, pareto_path)
    return _outcome(plan, run_dir, sum(row.finished for row in rows), False, note, table)


def _progress(plan: SearchPlan, backend: Backend, rows: list[TrialRow], console: Console) -> RunProgress:
    """The run's display, with its first estimate said (the replay needs none: it takes seconds)."""
    estimates = TrialEstimates()
    if backend.name != "replay":
        _log_data(plan)
        with console.status("timing the candidates for an estimate", spinner="dots"):
            estimates = run_estimate(plan, rows)
    progress = RunProgress(plan, console, rows, estimates, log)
    line = estimate_line(estimates, plan.target_trials - sum(row.finished for row in rows), plan.space.concurrency)
    if line:
        progress.print(line, style="dim")
    return progress


class _Events:
    """Each trial's TensorBoard events and, where the space asks, its MLflow run, written
    once as it ends (`coatsearch.search.tracking`, `coatsearch.search.mlflow_log`); no
    events for a replay (its trials trained earlier). A tracker whose write fails is said
    once and stops (TensorBoard's in the log; MLflow's, asked for, on the terminal too); the
    run goes on: the results table is the record."""

    def __init__(self, plan: SearchPlan, run_dir: Path, rows: list[TrialRow], backend: str,
                 warn: Callable[[str], None]) -> None:
        self.plan, self.run_dir, self.on, self.warn = plan, run_dir, backend != "replay", warn
        self.done = {row.trial for row in rows if row.finished}
        self.mlflow: MlflowLog | None = None
        uri = plan.space.tracking.mlflow if plan.space.tracking is not None else None
        if uri is not None:
            from coatsearch.search.mlflow_log import MlflowLog

            try:
                self.mlflow = MlflowLog(uri, plan.study, run_dir, backend)
            except Exception as exc:  # a store MLflow cannot open: the trials run all the same
                warn(f"MLflow runs not logged ({first_line(exc)})")

    def on_rows(self, rows: list[TrialRow]) -> None:
        from coatsearch.search.tracking import write_trial_events

        for row in rows:
            if row.trial in self.done or not row.finished:
                continue
            self.done.add(row.trial)
            if self.on:
                try:
                    write_trial_events(self.run_dir, row, self.plan.metrics)
                except (ImportError, OSError) as exc:
                    log.warning("TensorBoard events not written (%s)", first_line(exc))
                    self.on = False
            if self.mlflow is not None:
                try:
                    self.mlflow.log(row, self.plan.metrics)
                except Exception as exc:  # MLflow's errors are its own; none may fail the trial
                    self.warn(f"MLflow runs not logged from trial {row.trial} on ({first_line(exc)})")
                    self.mlflow = None


def _log_data(plan: SearchPlan) -> None:
    """The run's data in its log, once (the trials of every backend read the same)."""
    from coatsearch.search.inputs import load_trial_data

    try:
        data = load_trial_data(plan.space.data, plan.base.image_size, plan.space.seed)
    except CoatsearchError:  # not readable here (a cluster's path): the trials say
        return
    log.info("data: %s", data.summary())


def _objectives(plan: SearchPlan) -> tuple[tuple[str, str], ...]:
    """The objectives the run is ranked by (`front_objectives`: a matched cost left out)."""
    budget = plan.space.budget
    return front_objectives(tuple((o.metric, str(o.direction)) for o in plan.space.objectives),
                            tuple(budget.targets) if budget is not None else ())


def _outcome(plan: SearchPlan, run_dir: Path, finished: int, already_done: bool, note: str,
             table: pd.DataFrame) -> StudyOutcome:
    return StudyOutcome(run_dir, run_dir / "results.csv", finished, already_done, run_dir / "pareto.csv", note,
                        table, plan.space.to_dict().get("params", {}), plan.space.sampler, _objectives(plan))


def _write_outputs(plan: SearchPlan, rows: list[TrialRow], table_path: Path, pareto_path: Path) -> pd.DataFrame:
    """The results table and its Pareto front, written; the table as written."""
    frame = write_table(rows, table_path)
    front = pareto_set(frame, _objectives(plan))
    try:
        write_atomic(pareto_path, front.to_csv(index=False))
    except OSError as exc:
        raise CoatsearchError(f"{pareto_path}: cannot write the Pareto front ({os_reason(exc)})") from None
    return frame
