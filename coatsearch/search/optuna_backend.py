"""In-process search on an Optuna study.

The study lives in ``runs/<study>/study.db`` (SQLite) or at any Optuna storage URL the
space gives; a shared PostgreSQL URL lets several ``coatsearch run`` workers on several
machines split one study. It is a plain Optuna study: optuna-dashboard opens it.

Each trial stores its results row as the user attribute ``row``; the results table is
rebuilt from the storage after every trial, so the storage is the single source of truth.

Crash safety: trials send a heartbeat. A worker killed mid-trial leaves a RUNNING trial
whose heartbeat goes stale; the next worker fails it and re-enqueues the same
parameters (`RetryHeartbeatStaleTrialCallback`), so only the trial in flight is lost and
no finished trial ever runs again.

Early stopping: Optuna cannot prune multi-objective studies, so ASHA is applied here by
epoch rungs on validation accuracy against the other trials' records at the same rung
(`RungStopper`); stopped trials keep status ``stopped`` and their fidelity.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from coatsearch.results import FINISHED
from coatsearch.search.candidate import sample_params
from coatsearch.search.trial import objective_values, run_trial
from coatsearch.space import SearchSpace, SpaceError, iter_grid

# Heartbeats and stale-trial recovery are marked experimental in Optuna; we rely on them
# knowingly (see the module docstring), so their warnings are noise for our users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 2
GRACE_S = 6
#: Stop sampling after this many infeasible draws in a row (the space is mostly empty).
MAX_INFEASIBLE_STREAK = 200


class _TrialDidNotComplete(Exception):
    """A diverged or failed trial: recorded in its row, marked FAIL for the sampler."""


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler. A grid is walked by enqueuing its points (`enqueue_grid`), so
    its sampler only ever serves enqueued values; a random one keeps it simple."""
    seed = space.seed
    if space.sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, space.trials // 2)))
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(2, space.trials // 3)))


def open_study(space: SearchSpace, run_dir: Path) -> optuna.Study:
    url = space.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    storage = RDBStorage(
        url,
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage,
        study_name=space.study,
        directions=space.directions,
        sampler=make_sampler(space),
        load_if_exists=True,
    )


def rows_of(study: optuna.Study) -> list[dict[str, Any]]:
    return [t.user_attrs["row"] for t in study.get_trials(deepcopy=False) if "row" in t.user_attrs]


def finished_count(study: optuna.Study) -> int:
    return sum(1 for row in rows_of(study) if row.get("status") in FINISHED)


def enqueue_grid(study: optuna.Study, space: SearchSpace) -> None:
    """Enqueue, in a fixed order, every grid point no trial of the study holds yet.

    A point is held by any trial that finished, was infeasible, is running or waiting; a
    trial failed for a dead worker is re-queued by the stale-trial callback, so it is held
    by that copy. Running this again on resume (or from a second worker) adds nothing
    twice; raising ``trials`` adds the next points.
    """
    held = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.FAIL and "row" not in trial.user_attrs:
            continue  # a dead worker's trial: its retry copy holds the point
        held.append(trial.params or trial.system_attrs.get("fixed_params", {}))
    for params in iter_grid(space)[: space.target_trials]:
        if not any(_same_point(params, other) for other in held):
            study.enqueue_trial(params)
            held.append(params)


def _same_point(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


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
        for row in rows_of(self.study):
            history = json.loads(row.get("history") or "[]")
            if len(history) >= epoch and history[epoch - 1].get(self.metric) is not None:
                peers.append(sign * history[epoch - 1][self.metric])
        if len(peers) < self.factor:
            return False
        peers.sort(reverse=True)
        cutoff = peers[max(0, len(peers) // self.factor - 1)]
        return sign * value < cutoff


def _wait_for_stale(study: optuna.Study) -> bool:
    """Fail trials whose worker stopped sending heartbeats; True if any were failed."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return False
    time.sleep(GRACE_S + HEARTBEAT_S)
    before = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < before


def run_optuna(
    space: SearchSpace,
    run_dir: Path,
    on_row: Callable[[list[dict[str, Any]]], None],
    threads: int | None = None,
) -> None:
    """Run trials until the study holds ``space.trials`` finished trials."""
    study = open_study(space, run_dir)
    fail_stale_trials(study)
    target = space.target_trials
    early = space.early_stopping
    stopper = (
        RungStopper(study, early.grace_period, early.reduction_factor, space.epochs, early.metric, early.mode)
        if early.kind == "asha" else None
    )
    grid = space.sampler == "grid"
    if grid:
        enqueue_grid(study, space)

    def objective(trial: optuna.Trial) -> Any:
        params = sample_params(space, trial)

        def report(epoch: int, metrics: dict[str, Any]) -> bool:
            return bool(stopper and stopper.should_stop(epoch, metrics[early.metric]))

        row = run_trial(space, trial.number, params, report=report, threads=threads)
        trial.set_user_attr("row", row)
        if row["status"] == "infeasible":
            raise optuna.TrialPruned(row["reason"])
        if row["status"] not in ("complete", "stopped"):
            raise _TrialDidNotComplete(row.get("reason") or row["status"])
        return tuple(objective_values(space, row)) if space.multi_objective else objective_values(space, row)[0]

    infeasible_streak = 0
    while True:
        done = finished_count(study)
        on_row(rows_of(study))
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        # a grid is done when every enqueued point has ended (infeasible ones included)
        if done >= target or (grid and not waiting and not running):
            return
        if done + running >= target or (grid and not waiting):
            if _wait_for_stale(study):
                continue
            if running:  # other live workers will finish the study
                time.sleep(HEARTBEAT_S)
                continue
            if grid:
                return
        before = finished_count(study)
        study.optimize(objective, n_trials=1, catch=(_TrialDidNotComplete,), gc_after_trial=True)
        infeasible_streak = 0 if finished_count(study) > before else infeasible_streak + 1
        if infeasible_streak >= MAX_INFEASIBLE_STREAK:
            raise SpaceError(
                f"{MAX_INFEASIBLE_STREAK} candidates in a row were infeasible; widen the space or the budget"
            )
