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
from coatsearch.space import SearchSpace, iter_grid

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
    seed = space.seed
    if space.sampler == "grid":
        grid = {name: domain.grid_values() for name, domain in space.params.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if space.sampler == "random":
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


class RungStopper:
    """ASHA by epoch: at rungs ``grace * rf**k`` a trial continues only if its validation
    accuracy is in the top ``1/rf`` of all trials recorded at that rung."""

    def __init__(self, study: optuna.Study, grace: int, factor: int, max_epochs: int) -> None:
        self.study, self.factor = study, factor
        self.rungs = []
        rung = grace
        while rung < max_epochs:
            self.rungs.append(rung)
            rung *= factor

    def should_stop(self, epoch: int, value: float) -> bool:
        if epoch not in self.rungs:
            return False
        peers = []
        for row in rows_of(self.study):
            history = json.loads(row.get("history") or "[]")
            if len(history) >= epoch:
                peers.append(history[epoch - 1]["val_acc"])
        if len(peers) < self.factor:
            return False
        peers.sort(reverse=True)
        cutoff = peers[max(0, len(peers) // self.factor - 1)]
        return value < cutoff


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
    target = min(space.trials, space.grid_size()) if space.sampler == "grid" else space.trials
    stopper = (
        RungStopper(study, space.early_stopping.grace_period, space.early_stopping.reduction_factor, space.epochs)
        if space.early_stopping.kind == "asha" else None
    )
    if space.sampler == "grid" and not study.trials:
        # enqueue in a fixed order so the grid is walked the same way on every machine
        for params in iter_grid(space)[:target]:
            study.enqueue_trial(params)

    def objective(trial: optuna.Trial) -> Any:
        params = sample_params(space, trial)

        def report(epoch: int, metrics: dict[str, Any]) -> bool:
            return bool(stopper and stopper.should_stop(epoch, metrics["val_acc"]))

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
        if done >= target:
            return
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if done + running >= target:
            if _wait_for_stale(study):
                continue
            if running:  # other live workers will finish the study
                time.sleep(HEARTBEAT_S)
                continue
        before = finished_count(study)
        study.optimize(objective, n_trials=1, catch=(_TrialDidNotComplete,), gc_after_trial=True)
        infeasible_streak = 0 if finished_count(study) > before else infeasible_streak + 1
        if infeasible_streak >= MAX_INFEASIBLE_STREAK:
            raise RuntimeError(
                f"{MAX_INFEASIBLE_STREAK} candidates in a row were infeasible; widen the space or the budget"
            )
