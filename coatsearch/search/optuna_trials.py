"""What an Optuna study's trials say, read by every worker sharing it: the ledger of
rows, which grid points are held, and which running trials lost their worker.

The storage is the ledger: each trial stores its `TrialRow` as the user attribute
``row``, and the results table is rebuilt from it, so a damaged table is never trusted.

Grids: every point the study does not hold yet is enqueued (`enqueue_grid`) and each
worker takes enqueued points only. Workers starting together may enqueue a point twice;
of the trials holding one point only the lowest-numbered live one trains and the others
step aside (`point_taken`), so every point runs exactly once across workers, kill -9 and
resume.

Crash safety: a worker killed mid-trial leaves a RUNNING trial whose heartbeat goes stale
(or, killed before its first heartbeat, one no live worker claims); the next worker fails
it and re-enqueues the same parameters, so only the trial in flight is lost and no
finished trial ever runs again. A trial stopped by Ctrl-C is marked ``interrupted`` and
runs again on resume.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import time

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from coatsearch.host import pid_alive
from coatsearch.search.optuna_storage import GRACE_S, HEARTBEAT_S, RetryStaleTrial
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.status import Status

CLAIM_ATTR = "worker_pid"
"""The user attribute a trial's worker sets first (`claim`): ``[host, pid]``."""


def _retries_of(trial: FrozenTrial) -> int:
    return len(trial.system_attrs.get("retry_history", []))


def ledger(study: optuna.Study, retries: int) -> list[TrialRow]:
    """Every row the study holds: stored rows, plus trials that ended without one (their
    worker died or was interrupted) and were not retried: ``failed`` once a point has
    used its retries, else ``interrupted`` (it runs again).

    A trial that ended before its worker claimed it (`claim`, the trial's first act) never
    trained: a stop that lands inside Optuna's ``ask``, after it took a waiting grid point
    (a retry's carries its params already) and before the objective began, leaves such a
    trial to be failed later as unclaimed. Its grid point is ``interrupted`` whatever the
    retries, so it runs again rather than counting as done, and the row names the point,
    which its later run replaces in the table; one the sampler had not drawn yet has no
    point and no row."""
    trials = study.get_trials(deepcopy=False)
    rows: list[TrialRow] = []
    retried = {t.system_attrs.get("failed_trial") for t in trials if "failed_trial" in t.system_attrs}
    retried |= {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for trial in trials:
        if "row" in trial.user_attrs:
            rows.append(TrialRow.from_record(trial.user_attrs["row"]))
        elif trial.state == TrialState.FAIL and trial.number not in retried:
            began = CLAIM_ATTR in trial.user_attrs
            point = trial.system_attrs.get("fixed_params") or trial.params
            if not began and not point:
                continue
            dead = began and _retries_of(trial) >= retries and "interrupted" not in trial.user_attrs
            reason = ("the trial's worker died" if dead else "the run was stopped" if began
                      else "the run was stopped before the trial began")
            rows.append(TrialRow(trial=trial.number, status=Status.FAILED if dead else Status.INTERRUPTED,
                                 sampled=dict(point), reason=reason))
    return rows


def _point_of(trial: FrozenTrial) -> str:
    return point_key(trial.params or trial.system_attrs.get("fixed_params", {}))


def _holds_point(trial: FrozenTrial) -> bool:
    """The trial finished (or was infeasible), is running or is waiting to run."""
    return "row" in trial.user_attrs or trial.state in (TrialState.RUNNING, TrialState.WAITING)


def _held_points(study: optuna.Study) -> set[str]:
    """Points a trial holds."""
    return {_point_of(trial) for trial in study.get_trials(deepcopy=False) if _holds_point(trial)}


def point_taken(trials: list[FrozenTrial], me: FrozenTrial) -> bool:
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


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def finished_count(study: optuna.Study, retries: int) -> int:
    return sum(1 for row in ledger(study, retries) if row.finished)


#: How often the wait for heartbeats to go stale (`fail_stale`) looks whether its trials ended.
STALE_POLL_S = 0.5


def fail_stale(study: optuna.Study, retries: int) -> bool:
    """Fail trials whose worker stopped sending heartbeats, or died before its first one;
    True if any were failed.

    A trial claimed by a process of this machine that is gone is failed at once (a run
    resumed after kill -9 goes on without waiting); otherwise the heartbeats are given
    their grace period to go stale first, a wait that ends as soon as every trial it waits
    on has ended (a live worker finished it: none is left to fail)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return False
    if fail_dead_trials(study, retries):
        return True
    waited_on = {trial.number for trial in running}
    for _ in range(math.ceil((GRACE_S + HEARTBEAT_S) / STALE_POLL_S)):
        time.sleep(STALE_POLL_S)
        if not waited_on & {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}:
            return False
    before = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    fail_stale_trials(study)
    fail_dead_trials(study, retries)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < before


def claim(trial: optuna.Trial) -> None:
    """Mark a trial with the worker running it, so its death can be seen without a heartbeat.
    Optuna's `UpdateFinishedTrialError` if another worker has already ended the trial."""
    trial.set_user_attr(CLAIM_ATTR, [socket.gethostname(), os.getpid()])


def interrupt_trials_of(study: optuna.Study, pid: int) -> int:
    """End the RUNNING trials that the worker process ``pid`` of this machine claimed as
    ``interrupted``, as that worker would have on its stop: the driver calls it after
    killing a worker that did not end in time (its own write of ``interrupted`` may have
    been waiting on a busy database), so a stop the user asked for neither uses up a retry
    nor, with none left, counts the point as failed."""
    host, ended = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(CLAIM_ATTR) != [host, pid]:
            continue
        try:
            # no public handle on another process's trial: `optuna.Trial` would call the
            # sampler's `before_trial` on it, which a grid sampler answers by writing to it
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # it ended after all, or another worker failed it
            continue
        ended += 1
    return ended


def fail_dead_trials(study: optuna.Study, retries: int) -> int:
    """Fail RUNNING trials whose worker is a dead process on this machine (re-queued, like
    a stale heartbeat's, while the point has retries left), or that no worker claimed within
    the grace period (not re-queued: such a trial never trained, and its grid point is
    enqueued again as one no trial holds, `enqueue_grid`).

    Optuna notices a dead worker only by its heartbeat going stale; a worker killed between
    taking a trial and its first heartbeat leaves a RUNNING trial that never goes stale.
    A live worker slow to claim (a busy database, or clocks that disagree across machines:
    the age is this machine's clock against the taker's) may see its trial failed this way;
    it steps aside when its claim is refused (`claim`), having trained nothing."""
    host, failed = socket.gethostname(), 0
    now = datetime.datetime.now()
    retry = RetryStaleTrial(retries)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        claim = trial.user_attrs.get(CLAIM_ATTR)
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
        if claim is not None:  # one never claimed never trained: no retry used up (`ledger`)
            retry(study, _frozen(study, trial.number))
        failed += 1
    return failed
