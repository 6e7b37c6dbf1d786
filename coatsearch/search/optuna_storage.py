"""Where an Optuna study lives: its storage opened once per process, quietly.

The study lives in ``RUN_DIR/study.db`` (SQLite) or at any Optuna storage URL the space
gives; a shared PostgreSQL URL lets any number of ``coatsearch run`` workers on any number
of machines split one study. It is a plain Optuna study: optuna-dashboard opens it.

Trials send a heartbeat; a trial whose heartbeat goes stale is failed and its parameters
re-enqueued (`RetryStaleTrial`, at most ``retries`` times). SQLite needs a trial's state
changed under its write lock (`SqliteStudyStorage`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from coatsearch.errors import first_line
from coatsearch.search.plan import SearchPlan
from coatsearch.search.samplers import make_sampler
from coatsearch.search.storage_url import safe_url
from coatsearch.space import SpaceError

HEARTBEAT_S = 2
GRACE_S = 6
@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's info logs and its warnings about the heartbeat API (experimental, relied on
    knowingly) silenced while a search runs, and restored after it; a failed trial is one
    line (`OneLineFailures`)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_log, one_line = logging.getLogger("optuna.study._optimize"), OneLineFailures()
    trial_log.addFilter(one_line)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        trial_log.removeFilter(one_line)
        optuna.logging.set_verbosity(level)


class OneLineFailures(logging.Filter):
    """Optuna's warning for a failed trial (its parameters, the exception, a traceback, then
    a second warning "failed with value None": nine lines a trial, which `catch=` does not
    silence) left out: the run prints one line for every trial that ends, failed ones with
    their reason (`coatsearch.search.progress`), and the reason is in the trial's row."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Trial ") and " failed with " in message)


def storage_url(plan: SearchPlan, run_dir: Path) -> str:
    return plan.space.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_study(plan: SearchPlan, run_dir: Path, attempts: int = 5) -> optuna.Study:
    """The study (created on first use). Creating the schema races when several workers
    start at once on a fresh database, so a lost race is retried."""
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

    url = storage_url(plan, run_dir)
    quiet_sqlalchemy()
    if url.startswith("sqlite"):
        wait_for_write_lock(url)
    for attempt in range(attempts):
        try:
            with quiet_optuna():
                sqlite = url.startswith("sqlite")
                storage = (SqliteStudyStorage if sqlite else StudyStorage)(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryStaleTrial(plan.space.retries),
                    engine_kwargs={"connect_args": {"timeout": BUSY_S}} if sqlite else None,
                )
                return optuna.create_study(
                    storage=storage, study_name=plan.study,
                    directions=plan.study_directions,
                    sampler=make_sampler(plan), load_if_exists=True,
                )
        except (IntegrityError, OperationalError) as exc:
            if "database is locked" in str(exc):
                raise SpaceError(_locked(url, BUSY_S)) from None  # the connection's own wait
            if attempt == attempts - 1:
                raise SpaceError(f"storage: cannot open the study at {safe_url(url)}: {first_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
        except DatabaseError as exc:
            raise SpaceError(f"storage: {safe_url(url)} is not an Optuna study database ({first_line(exc)}); "
                             "move it away or use another --out") from None
        except ValueError as exc:  # e.g. the stored study has other directions
            raise SpaceError(f"storage: {exc}".splitlines()[0]) from None
    raise AssertionError("unreachable")


#: Seconds a run waits for another process to release a SQLite study's write lock before
#: it says so (while it runs, a busy database is waited on for `BUSY_S`).
LOCK_WAIT_S = 10
BUSY_S = 60


def wait_for_write_lock(url: str, seconds: float | None = None) -> None:
    """Take and release a SQLite study's write lock, waiting at most ``seconds``
    (`LOCK_WAIT_S`): a database that another process keeps locked (an open transaction in
    a SQLite shell, a hung worker) is refused in one line, not waited on for minutes."""
    import sqlite3

    from sqlalchemy.engine import make_url

    seconds = LOCK_WAIT_S if seconds is None else seconds
    database = make_url(url).database
    if not database or not Path(database).is_file():
        return
    connection = sqlite3.connect(database, timeout=seconds)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise SpaceError(_locked(url, seconds)) from None
    except sqlite3.DatabaseError:
        pass  # not a database: opening the study says so
    finally:
        connection.close()


def _locked(url: str, seconds: float) -> str:
    from sqlalchemy.engine import make_url

    return (f"{make_url(url).database}: the study database is locked by another process (waited up to {seconds:g} s); "
            "end that process, or wait for it, and run again")


def quiet_sqlalchemy() -> None:
    """SQLAlchemy's own error logs kept off the terminal unless the program configures logging.

    A stop signal that lands while a query runs makes SQLAlchemy log "Error closing
    cursor" with a traceback (through Python's last-resort handler, since nothing else
    handles its logger); the stop is clean and says so in its own line. A handler that
    drops the record keeps it from the last resort and still lets it propagate to any
    handler the program sets up."""
    logger = logging.getLogger("sqlalchemy")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


class HeartbeatSkipsFailures:
    """A heartbeat that cannot be written (a full disk, a database gone away) is skipped.

    Optuna writes heartbeats from a background thread, where a failure prints a traceback
    and ends the thread; the trial's own next write meets the same fault in the main thread
    and stops the run with one line. A missed heartbeat only lets another worker see the
    trial as stale after the grace period, which is what a worker that cannot write is."""

    def record_heartbeat(self, trial_id: int) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            super().record_heartbeat(trial_id)  # type: ignore[misc]
        except (optuna.exceptions.StorageInternalError, SQLAlchemyError, OSError) as exc:
            logging.getLogger("coatsearch").info("trial %d: heartbeat not written: %s", trial_id, first_line(exc))


class StudyStorage(HeartbeatSkipsFailures, RDBStorage):
    """Optuna's RDB storage (PostgreSQL, MySQL), with heartbeats that fail quietly."""


#: Set while this thread changes a trial's state (`SqliteStudyStorage`).
_CHANGING_STATE = threading.local()


def _begin_immediate(connection: Any) -> None:
    """A transaction that changes a trial's state begins with the write lock."""
    if getattr(_CHANGING_STATE, "on", False):
        # the driver sees a transaction open and does not begin its own (deferred) one
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class SqliteStudyStorage(HeartbeatSkipsFailures, RDBStorage):
    """Optuna's RDB storage on SQLite, where a trial's state changes under the database's
    write lock, taken when the transaction begins (``BEGIN IMMEDIATE``).

    Optuna hands a waiting trial to one worker by reading it WAITING and writing it
    RUNNING in one transaction, and relies on ``SELECT ... FOR UPDATE`` to keep other
    workers off it. SQLite has no row locks and ignores that clause, so a state change
    takes the whole database's lock from its start, and only a state change: other
    transactions are left to the driver (it begins one at the first write), so reads do
    not queue behind the lock and never have to upgrade a lock to write, which SQLite
    refuses at once rather than wait for."""

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:  # whatever RDBStorage takes
        super().__init__(url, *args, **kwargs)
        self._lock_state_changes()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # a copy shipped to another process rebuilds its engine: the hook goes on the new one
        super().__setstate__(state)
        self._lock_state_changes()

    def _lock_state_changes(self) -> None:
        from sqlalchemy import event

        if not event.contains(self.engine, "begin", _begin_immediate):
            event.listen(self.engine, "begin", _begin_immediate)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        _CHANGING_STATE.on = True
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            _CHANGING_STATE.on = False


class RetryStaleTrial:
    """Optuna's `RetryHeartbeatStaleTrialCallback`, without the dead trial's user attributes.

    Optuna's callback copies them into the retry: the dead worker's ``worker_pid`` would
    make the retry look dead to any worker that checks it before its new worker claims it.
    A trial that stored its row before its worker died has finished and is not retried."""

    def __init__(self, max_retry: int) -> None:
        with warnings.catch_warnings():  # experimental since Optuna 2.8, relied on knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "row" in trial.user_attrs:
            return
        fresh = copy.deepcopy(trial)  # the callback appends to the trial's retry history in place
        fresh.user_attrs = {}
        self._retry(study, fresh)
