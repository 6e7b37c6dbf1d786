"""In-process search on an Optuna study: this process and ``concurrency - 1`` spawned
workers each take trials from one study until it holds the plan's target.

The study's storage (`optuna_storage`), what its trials say (`optuna_trials`: the ledger,
grid points, dead workers) and early stopping by rungs (`rungs`) are beside this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from coatsearch.errors import first_line
from coatsearch.host import sleep_while_waiting
from coatsearch.search.dashboard import name_metrics, report_epoch, row_attrs, set_row_attrs
from coatsearch.search.optuna_storage import open_study, quiet_optuna
from coatsearch.search.optuna_trials import (
    claim,
    enqueue_grid,
    fail_dead_trials,
    fail_stale,
    finished_count,
    interrupt_trials_of,
    ledger,
    point_taken,
)
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.rungs import CONTINUE, RungStopper, make_scheduler
from coatsearch.search.trial import run_trial
from coatsearch.space import SpaceError
from coatsearch.status import Status

log = logging.getLogger("coatsearch")

#: (trial number, epochs trained): `coatsearch.search.backend.OnEpoch`
OnEpoch = Callable[[int, int], None]

#: Stop sampling after this many infeasible draws in a row (the space is mostly empty).
MAX_INFEASIBLE_STREAK = 200


class _TrialDidNotComplete(Exception):
    """A diverged or failed trial: recorded in its row, marked FAIL for the sampler."""


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

    def warm(self, rows: list[TrialRow]) -> None:
        """The earlier trials as finished trials of the study (`optuna.trial.create_trial`
        against this space's distributions), so TPE and NSGA-II draw from them; once."""
        from coatsearch.search.table_build import trial_of

        with quiet_optuna():
            study = open_study(self.plan, self.run_dir)
            trials = study.get_trials(deepcopy=False)
            if not rows or any("warm_start" in t.user_attrs for t in trials):
                return
            frozen = [trial_of(self.plan, row, len(trials) + i) for i, row in enumerate(rows)]
            for trial, row in zip(frozen, rows):  # filterable in optuna-dashboard as the run's own are
                trial.user_attrs.update({**row_attrs(row), "warm_start": row.warm_start})
            study.add_trials(frozen)

    def run(self, on_rows: Callable[[list[TrialRow]], None], on_epoch: OnEpoch | None = None) -> None:
        """Run trials until the study holds the plan's target of finished trials; ``on_epoch``
        sees this process's trials (the spawned workers' show when they end)."""
        study = open_study(self.plan, self.run_dir)  # create the schema once, before any worker
        sleep_while_waiting()  # the workers inherit it and load torch after
        payload = pickle.dumps((sys.path, pickle.dumps((self.plan, str(self.run_dir), self.threads))))
        workers = [start_worker(payload) for _ in range(self.plan.space.concurrency - 1)]
        try:
            run_worker(self.plan, self.run_dir, on_rows, self.threads, on_epoch)
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.terminate()  # the worker marks its trial in flight interrupted (`worker_main`)
            for proc in workers:
                try:
                    proc.wait(STOP_S)
                except subprocess.TimeoutExpired:  # stuck, perhaps waiting on a busy database
                    proc.kill()
                    proc.wait()
                    try:
                        interrupt_trials_of(study, proc.pid)
                    except Exception as exc:  # noqa: BLE001 - the stop itself must go on and be said
                        log.warning("worker %d: its trial was not marked interrupted (%s); it runs again "
                                    "as a dead worker's", proc.pid, first_line(exc))
        on_rows(self.ledger())


#: Seconds a stopped worker has to mark its trial interrupted before it is killed.
STOP_S = 30

#: A worker's first instructions, before Python imports anything of coatsearch's: tie its
#: life to the driver's (Linux: SIGTERM when the driver dies, however it dies), and end at
#: once if the driver is already gone. Ctrl-C and a closed terminal reach the whole process
#: group; the driver handles them and stops its workers, so they ignore both.
BOOT = """\
import ctypes, os, pickle, signal, sys
driver = int(sys.argv[1])
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != driver:
    os._exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if hasattr(signal, "SIGHUP"):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
path, payload = pickle.load(sys.stdin.buffer)
sys.path[:0] = [p for p in path if p not in sys.path]
from coatsearch.search.optuna_backend import worker_main
worker_main(driver, payload)
"""


def start_worker(payload: bytes) -> subprocess.Popen[bytes]:
    """An extra worker process (``concurrency`` > 1), tied to this one from its first
    instruction (`BOOT`); ``payload`` carries the search path and the pickled plan."""
    proc = subprocess.Popen([sys.executable, "-c", BOOT, str(os.getpid())], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(payload)
    proc.stdin.close()
    return proc


def worker_main(driver: int, payload: bytes) -> None:
    """An extra worker's loop. The driver decides when to stop and stops a worker with
    SIGTERM, which ends its trial in flight as the driver's own ends: ``interrupted``, to
    run again on resume, neither failed nor using up a retry as a dead worker's trial does."""
    stop_on_sigterm()
    _exit_with_parent(driver)
    plan, run_dir, threads = pickle.loads(payload)
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(plan, Path(run_dir), lambda rows: None, threads)


def stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, and again where it was swallowed.

    A signal's handler runs between any two bytecodes, also inside a finalizer (a weakref
    callback SQLAlchemy's registry runs as objects are collected), where Python prints the
    exception as "Exception ignored in ..." and drops it: the stop would be lost and a
    traceback printed. The unraisable hook takes such a KeyboardInterrupt quietly and has the
    signal sent again from another thread a moment later, once the hook has returned (a
    handler run inside the hook would be swallowed the same way)."""
    import signal
    import threading

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    default = sys.unraisablehook

    def unraisable(hook: Any) -> None:
        if isinstance(hook.exc_value, KeyboardInterrupt):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
            return
        default(hook)

    signal.signal(signal.SIGTERM, stop)
    sys.unraisablehook = unraisable


def _exit_with_parent(driver: int, poll_s: float = 0.5) -> None:
    """End this worker when the driver is gone, where the kernel's tie (`BOOT`) is not
    there: no orphan trains on, and its trial in flight goes stale and is retried."""
    import threading

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="coatsearch-parent-watch").start()


def run_worker(plan: SearchPlan, run_dir: Path, on_rows: Callable[[list[TrialRow]], None], threads: int | None,
               on_epoch: OnEpoch | None = None) -> None:
    """One worker's loop: take trials until the study is done (other workers may share it)."""
    with quiet_optuna():
        _run_worker(plan, run_dir, on_rows, threads, on_epoch or (lambda trial, epoch: None))


def _run_worker(plan: SearchPlan, run_dir: Path, on_rows: Callable[[list[TrialRow]], None], threads: int | None,
                on_epoch: OnEpoch) -> None:
    space = plan.space
    study = open_study(plan, run_dir)
    target, retries = plan.target_trials, space.retries
    fail_stale_trials(study)
    fail_dead_trials(study, retries)
    name_metrics(study, plan)
    scheduler = make_scheduler(plan)
    stopper = RungStopper(study, scheduler, plan) if scheduler is not None else None
    grid = plan.grid is not None
    if grid:
        enqueue_grid(study, plan)

    # the trial of this round that another worker ended while this one ran it (failed as
    # unclaimed or stale on a busy database): its writes are refused, and this worker steps aside
    ended_elsewhere: list[int] = []

    def objective(trial: optuna.Trial) -> Any:
        # a stop signal anywhere from the trial's start to its stored row (reading the
        # study, drawing the point, the progress display, the dashboard's attributes:
        # storage writes that take a while under load) interrupts the trial, to run again
        # on resume, rather than failing it
        try:
            row = _run(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            ended_elsewhere.append(trial.number)
            raise optuna.TrialPruned(f"trial {trial.number} was ended by another worker") from None
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            # the run is stopping: not Optuna's "Trial N failed" and a traceback (`quiet_optuna` restores it)
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            raise
        if row.status == Status.INFEASIBLE:
            raise optuna.TrialPruned(row.reason)
        if row.status not in (Status.COMPLETE, Status.STOPPED):
            raise _TrialDidNotComplete(row.reason or str(row.status))
        values = [row.objective(m) for m in plan.metrics]
        return tuple(values) if space.multi_objective else values[0]

    def _run(trial: optuna.Trial) -> TrialRow:
        """The trial's grid point (if it is still this trial's to run), trained; its row stored."""
        if grid:
            trials = study.get_trials(deepcopy=False)
            me = next(t for t in trials if t.number == trial.number)
            if "fixed_params" not in me.system_attrs:
                raise optuna.TrialPruned("no grid point left")  # another worker took the last one
            if point_taken(trials, me):
                raise optuna.TrialPruned("another trial holds this grid point")
        claim(trial)
        params = plan.sample(trial)
        history: list[dict[str, Any]] = []

        def report(epoch: int, metrics: dict[str, Any]) -> bool:
            on_epoch(trial.number, epoch)
            report_epoch(trial, plan, epoch, metrics)
            history.append(metrics)
            return bool(stopper and stopper.should_stop(trial.number, history, metrics))

        if stopper is not None:
            stopper.last = CONTINUE
        on_epoch(trial.number, 0)
        row = run_trial(plan, trial.number, params, report=report, threads=threads)
        if stopper is not None and stopper.last.prediction is not None:
            row = row.replace(curve_prediction=stopper.last.prediction, curve_sd=stopper.last.sd,
                              curve_epoch=stopper.last.epoch)
        set_row_attrs(trial, row)
        trial.set_user_attr("row", row.to_record())
        return row

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
            if fail_stale(study, retries):
                if grid:
                    enqueue_grid(study, plan)
                continue
            if running:  # other live workers will finish the study (`fail_stale` waited on them)
                continue
            if grid:
                return
        before = done
        ended_elsewhere.clear()
        try:
            study.optimize(objective, n_trials=1, catch=(_TrialDidNotComplete,), gc_after_trial=True)
        except ValueError:  # Optuna's "Cannot tell a FAIL trial": one another worker ended
            if not ended_elsewhere:
                raise
            if grid:  # its point, if the worker that ended it has not enqueued it again yet
                enqueue_grid(study, plan)
            continue  # not an infeasible candidate
        infeasible_streak = 0 if finished_count(study, retries) > before else infeasible_streak + 1
        if infeasible_streak >= MAX_INFEASIBLE_STREAK:
            raise SpaceError(
                f"{MAX_INFEASIBLE_STREAK} candidates in a row were infeasible; widen the space or the budget"
            )
