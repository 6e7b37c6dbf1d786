"""In-process search on an Optuna study.

The study lives in ``RUN_DIR/study.db`` (SQLite) or at any Optuna storage URL the space
gives; a shared PostgreSQL URL lets any number of ``coatsearch run`` workers on any number
of machines split one study. It is a plain Optuna study: optuna-dashboard opens it.

The storage is the ledger: each trial stores its `TrialRow` as the user attribute
``row``, and the results table is rebuilt from it, so a damaged table is never trusted.

Grids: every point the study does not hold yet is enqueued (`enqueue_grid`) and each
worker takes enqueued points only. Workers starting together may enqueue a point twice;
of the trials holding one point only the lowest-numbered live one trains and the others
step aside (`_point_taken`), so every point runs exactly once across workers, kill -9 and
resume.

Crash safety: trials send a heartbeat. A worker killed mid-trial leaves a RUNNING trial
whose heartbeat goes stale; the next worker fails it and re-enqueues the same parameters
(`RetryStaleTrial`, at most ``retries`` times), so only the trial in
flight is lost and no finished trial ever runs again. A trial stopped by Ctrl-C is marked
``interrupted`` and runs again on resume.

Early stopping: Optuna cannot prune multi-objective studies, so ASHA is applied here by
epoch rungs against the other trials' records at the same rung (`RungStopper`); stopped
trials keep status ``stopped`` and their fidelity.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from coatsearch.errors import first_line
from coatsearch.host import pid_alive, sleep_while_waiting
from coatsearch.search.plan import SearchPlan, safe_url
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.search.samplers import make_sampler
from coatsearch.search.trial import run_trial
from coatsearch.space import SpaceError
from coatsearch.status import Status

HEARTBEAT_S = 2
GRACE_S = 6
#: Stop sampling after this many infeasible draws in a row (the space is mostly empty).
MAX_INFEASIBLE_STREAK = 200


class _TrialDidNotComplete(Exception):
    """A diverged or failed trial: recorded in its row, marked FAIL for the sampler."""


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's info logs and its warnings about the heartbeat API (experimental, relied on
    knowingly) silenced while a search runs, and restored after it."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def storage_url(plan: SearchPlan, run_dir: Path) -> str:
    return plan.space.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_study(plan: SearchPlan, run_dir: Path, attempts: int = 5) -> optuna.Study:
    """The study (created on first use). Creating the schema races when several workers
    start at once on a fresh database, so a lost race is retried."""
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

    url = storage_url(plan, run_dir)
    for attempt in range(attempts):
        try:
            with quiet_optuna():
                sqlite = url.startswith("sqlite")
                storage = (SqliteStudyStorage if sqlite else RDBStorage)(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryStaleTrial(plan.space.retries),
                    engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                )
                return optuna.create_study(
                    storage=storage, study_name=plan.study,
                    directions=plan.study_directions,
                    sampler=make_sampler(plan), load_if_exists=True,
                )
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts - 1:
                raise SpaceError(f"storage: cannot open the study at {safe_url(url)}: {first_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
        except DatabaseError as exc:
            raise SpaceError(f"storage: {safe_url(url)} is not an Optuna study database ({first_line(exc)}); "
                             "move it away or use another --out") from None
        except ValueError as exc:  # e.g. the stored study has other directions
            raise SpaceError(f"storage: {exc}".splitlines()[0]) from None
    raise AssertionError("unreachable")


#: Set while this thread changes a trial's state (`SqliteStudyStorage`).
_CHANGING_STATE = threading.local()


class SqliteStudyStorage(RDBStorage):
    """Optuna's RDB storage on SQLite, with a trial's state changed under the database's
    write lock, taken when the transaction begins (``BEGIN IMMEDIATE``).

    Optuna hands a waiting trial to a worker by reading it as WAITING and writing it
    RUNNING in one transaction, relying on ``SELECT ... FOR UPDATE``, which SQLite
    ignores: two workers could both read the trial as waiting and both run it (about one
    pop in ten with three workers popping at once), and the second to finish then failed
    with "Cannot tell a COMPLETE trial". Only state changes take the lock early; every
    other transaction is left to the driver as before (it begins one at the first write,
    so reads do not queue behind the lock, and a read never has to upgrade its lock to
    write, which SQLite refuses at once rather than wait for)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        from sqlalchemy import event

        @event.listens_for(self.engine, "begin")
        def _begin(connection: Any) -> None:
            if getattr(_CHANGING_STATE, "on", False):
                # the driver sees a transaction open and does not begin its own (deferred) one
                connection.exec_driver_sql("BEGIN IMMEDIATE")

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


# --------------------------------------------------------------------------- the ledger
def _retries_of(trial: FrozenTrial) -> int:
    return len(trial.system_attrs.get("retry_history", []))


def ledger(study: optuna.Study, retries: int) -> list[TrialRow]:
    """Every row the study holds: stored rows, plus trials that ended without one (their
    worker died or was interrupted) and were not retried: ``failed`` once a point has
    used its retries, else ``interrupted`` (it runs again)."""
    trials = study.get_trials(deepcopy=False)
    rows: list[TrialRow] = []
    retried = {t.system_attrs.get("failed_trial") for t in trials if "failed_trial" in t.system_attrs}
    retried |= {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for trial in trials:
        if "row" in trial.user_attrs:
            rows.append(TrialRow.from_record(trial.user_attrs["row"]))
        elif trial.state == TrialState.FAIL and trial.number not in retried:
            dead = _retries_of(trial) >= retries and "interrupted" not in trial.user_attrs
            rows.append(TrialRow(
                trial=trial.number, status=Status.FAILED if dead else Status.INTERRUPTED,
                params=dict(trial.params), reason="the trial's worker died" if dead else "the run was stopped",
            ))
    return rows


def _point_of(trial: FrozenTrial) -> str:
    return point_key(trial.params or trial.system_attrs.get("fixed_params", {}))


def _holds_point(trial: FrozenTrial) -> bool:
    """The trial finished (or was infeasible), is running or is waiting to run."""
    return "row" in trial.user_attrs or trial.state in (TrialState.RUNNING, TrialState.WAITING)


def _held_points(study: optuna.Study) -> set[str]:
    """Points a trial holds."""
    return {_point_of(trial) for trial in study.get_trials(deepcopy=False) if _holds_point(trial)}


def _point_taken(trials: list[FrozenTrial], me: FrozenTrial) -> bool:
    """True when another of the study's ``trials`` owns ``me``'s grid point: one has a row
    for it, or a lower-numbered one is running or waiting. The lowest-numbered live trial
    of a point never steps aside, so a point enqueued twice by racing workers still runs
    once."""
    point = _point_of(me)
    return any(
        t.number != me.number and _point_of(t) == point
        and ("row" in t.user_attrs or (t.number < me.number and _holds_point(t)))
        for t in trials
    )


def enqueue_grid(study: optuna.Study, plan: SearchPlan) -> None:
    """Enqueue, in the grid's order, every point of the plan that no trial holds yet.

    Running this again on resume (or from a second worker) adds nothing twice; raising
    ``trials`` adds the next points; an interrupted point is enqueued again.
    """
    held = _held_points(study)
    for params in plan.grid_points:
        if point_key(params) not in held:
            study.enqueue_trial(params)
            held.add(point_key(params))


class RungStopper:
    """ASHA by epoch: at rungs ``grace * rf**k`` a trial continues only if its metric is in
    the top ``1/rf`` of all trials recorded at that rung."""

    def __init__(self, study: optuna.Study, grace: int, factor: int, max_epochs: int,
                 metric: str = "val_acc", mode: str = "max") -> None:
        self.study, self.factor, self.metric, self.mode = study, factor, metric, mode
        self.rungs = []
        rung = grace
        while rung < max_epochs:
            self.rungs.append(rung)
            rung *= factor

    def should_stop(self, epoch: int, value: float) -> bool:
        if epoch not in self.rungs:
            return False
        sign = 1.0 if self.mode == "max" else -1.0  # compare as "higher is better"
        peers = []
        for trial in self.study.get_trials(deepcopy=False):
            history = json.loads((trial.user_attrs.get("row") or {}).get("history") or "[]")
            if len(history) >= epoch and history[epoch - 1].get(self.metric) is not None:
                peers.append(sign * history[epoch - 1][self.metric])
        if len(peers) < self.factor:
            return False
        peers.sort(reverse=True)
        cutoff = peers[max(0, len(peers) // self.factor - 1)]
        return sign * value < cutoff


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _finished_count(study: optuna.Study, retries: int) -> int:
    return sum(1 for row in ledger(study, retries) if row.finished)


def _fail_stale(study: optuna.Study, retries: int) -> bool:
    """Fail trials whose worker stopped sending heartbeats, or died before its first one;
    True if any were failed."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return False
    time.sleep(GRACE_S + HEARTBEAT_S)
    before = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    fail_stale_trials(study)
    fail_dead_trials(study, retries)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < before


def _claim(trial: optuna.Trial) -> None:
    """Mark a trial with the worker running it, so its death can be seen without a heartbeat."""
    trial.set_user_attr("worker_pid", [socket.gethostname(), os.getpid()])


def fail_dead_trials(study: optuna.Study, retries: int) -> int:
    """Fail (and re-queue, like a stale heartbeat) RUNNING trials whose worker is a dead
    process on this machine, or that no worker claimed within the grace period.

    Optuna notices a dead worker only by its heartbeat going stale; a worker killed between
    taking a trial and its first heartbeat leaves a RUNNING trial that never goes stale."""
    host, failed = socket.gethostname(), 0
    now = datetime.datetime.now()
    retry = RetryStaleTrial(retries)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        claim = trial.user_attrs.get("worker_pid")
        if claim is None:
            started = trial.datetime_start or now
            dead = (now - started).total_seconds() > GRACE_S + HEARTBEAT_S
        else:
            dead = claim[0] == host and not pid_alive(int(claim[1]))
        if not dead:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker got there first
            continue
        retry(study, _frozen(study, trial.number))
        failed += 1
    return failed



# --------------------------------------------------------------------------- the backend
class OptunaBackend:
    """Trials in this process (plus ``concurrency - 1`` spawned workers) on one study."""

    name = "optuna"

    def __init__(self, plan: SearchPlan, run_dir: Path, threads: int | None = None) -> None:
        self.plan, self.run_dir = plan, run_dir
        self.threads = threads if threads is not None else plan.space.trial_threads

    def session(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def ledger(self) -> list[TrialRow]:
        return ledger(open_study(self.plan, self.run_dir), self.plan.space.retries)

    def run(self, on_rows: Callable[[list[TrialRow]], None]) -> None:
        """Run trials until the study holds the plan's target of finished trials."""
        import multiprocessing

        open_study(self.plan, self.run_dir)  # create the schema once, before any worker
        sleep_while_waiting()  # the workers inherit it and load torch after
        ctx = multiprocessing.get_context("spawn")
        workers = [ctx.Process(target=_worker, args=(self.plan, str(self.run_dir), self.threads), daemon=True)
                   for _ in range(self.plan.space.concurrency - 1)]
        for proc in workers:
            proc.start()
        try:
            run_worker(self.plan, self.run_dir, on_rows, self.threads)
        finally:
            for proc in workers:
                if proc.is_alive():
                    proc.terminate()  # the worker marks its trial in flight interrupted (`_worker`)
            for proc in workers:
                proc.join(STOP_S)
                if proc.is_alive():  # stuck: its trial goes stale and the next run retries it
                    proc.kill()
                    proc.join()
        on_rows(self.ledger())


#: Seconds a stopped worker has to mark its trial interrupted before it is killed.
STOP_S = 30


def _worker(plan: SearchPlan, run_dir: str, threads: int) -> None:
    """Entry point of extra worker processes (``concurrency`` > 1). The parent decides when
    to stop (Ctrl-C reaches the whole process group: ignored here) and stops a worker with
    SIGTERM, which ends its trial in flight as the parent's own ends: ``interrupted``, to run
    again on resume, neither failed nor using up a retry as a dead worker's trial does."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    _exit_with_parent()
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(plan, Path(run_dir), lambda rows: None, threads)


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """End this worker when its parent is gone (killed with -9): no orphan trains on, and
    its trial in flight goes stale and is retried by the next run."""
    import os
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="coatsearch-parent-watch").start()


def run_worker(plan: SearchPlan, run_dir: Path, on_rows: Callable[[list[TrialRow]], None], threads: int | None) -> None:
    """One worker's loop: take trials until the study is done (other workers may share it)."""
    with quiet_optuna():
        _run_worker(plan, run_dir, on_rows, threads)


def _run_worker(plan: SearchPlan, run_dir: Path, on_rows: Callable[[list[TrialRow]], None], threads: int | None) -> None:
    space = plan.space
    study = open_study(plan, run_dir)
    target, retries = plan.target_trials, space.retries
    fail_stale_trials(study)
    fail_dead_trials(study, retries)
    early = space.early_stopping
    stopper = (
        RungStopper(study, early.grace_period, early.reduction_factor, plan.epochs, early.metric, early.mode)
        if early.kind == "asha" else None
    )
    grid = plan.grid is not None
    if grid:
        enqueue_grid(study, plan)

    def objective(trial: optuna.Trial) -> Any:
        if grid:
            trials = study.get_trials(deepcopy=False)
            me = next(t for t in trials if t.number == trial.number)
            if "fixed_params" not in me.system_attrs:
                raise optuna.TrialPruned("no grid point left")  # another worker took the last one
            if _point_taken(trials, me):
                raise optuna.TrialPruned("another trial holds this grid point")
        _claim(trial)
        params = plan.sample(trial)

        def report(epoch: int, metrics: dict[str, Any]) -> bool:
            return bool(stopper and stopper.should_stop(epoch, metrics[early.metric]))

        try:
            row = run_trial(plan, trial.number, params, report=report, threads=threads)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            # the run is stopping: not Optuna's "Trial N failed" and a traceback (`quiet_optuna` restores it)
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            raise
        trial.set_user_attr("row", row.to_record())
        if row.status == Status.INFEASIBLE:
            raise optuna.TrialPruned(row.reason)
        if row.status not in (Status.COMPLETE, Status.STOPPED):
            raise _TrialDidNotComplete(row.reason or str(row.status))
        values = [row.objective(m) for m in plan.metrics]
        return tuple(values) if space.multi_objective else values[0]

    infeasible_streak = 0
    while True:
        rows = ledger(study, retries)
        done = sum(row.finished for row in rows)
        on_rows(rows)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        # a grid is done when every enqueued point has ended (infeasible ones included)
        if done >= target or (grid and not waiting and not running):
            return
        if done + running >= target or (grid and not waiting):
            if _fail_stale(study, retries):
                if grid:
                    enqueue_grid(study, plan)
                continue
            if running:  # other live workers will finish the study
                time.sleep(HEARTBEAT_S)
                continue
            if grid:
                return
        before = done
        study.optimize(objective, n_trials=1, catch=(_TrialDidNotComplete,), gc_after_trial=True)
        infeasible_streak = 0 if _finished_count(study, retries) > before else infeasible_streak + 1
        if infeasible_streak >= MAX_INFEASIBLE_STREAK:
            raise SpaceError(
                f"{MAX_INFEASIBLE_STREAK} candidates in a row were infeasible; widen the space or the budget"
            )
