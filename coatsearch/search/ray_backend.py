"""Search on Ray Tune: the same plan and trials, on one machine or a cluster.

Sampling goes through `OptunaSearch` with the plan's define-by-run sampling and the same
sampler as the optuna backend; early stopping through Ray's `ASHAScheduler` (for
``hyperband``, with several brackets: Tune's asynchronous Hyperband; its synchronous
`HyperBandScheduler` pauses trials, which needs checkpoints a trial does not keep). Locally Ray
starts embedded and is shut down at the end; ``address`` (``--address auto|ray://...``)
joins an existing cluster of GPU/TPU nodes unchanged, with per-trial resources from the
space.

The ledger is ours, not Tune's: each trial that ends is appended to ``RUN_DIR/ledger.jsonl``
at once (one JSON row a line, flushed to disk). A run, first or resumed, starts a fresh
Tune experiment for what the ledger does not hold yet: grid points not yet run, in the
grid's order, or ``trials`` minus those finished, with the finished ones told to the
sampler first so it resumes where it was. So a finished trial never runs again, after
kill -9 too, and only trials in flight are lost. A worker that dies is retried
``retries`` times (`FailureConfig`); a trial that keeps dying is recorded as failed.

Beside this module: the ledger file (`jsonl_ledger`), Ray's start and shutdown
(`ray_session`) and what a worker runs (`ray_trainables`).

Multi-objective searches put the metric and mode lists on the searcher only (Ray rejects
lists in `TuneConfig`), and ASHA gets its own single metric. A trial ASHA stops early is
recorded with status ``stopped`` and its fidelity, so it is never ranked beside
full-fidelity trials. Infeasible candidates use up a Tune sample; the backend runs more
rounds until the target of finished trials is met.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from coatsearch.search import ray_trainables
from coatsearch.search.jsonl_ledger import add_warm, append_ledger, read_ledger
from coatsearch.search.optuna_storage import quiet_optuna
from coatsearch.search.plan import SearchPlan
from coatsearch.search.ray_session import ray_session
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.status import Status

#: Rounds of Tune experiments one run may start before it gives up on a mostly infeasible space.
MAX_ROUNDS = 20


class LedgerCallback(Callback):
    """Driver side: numbers trials in the order Tune made them and appends each ended
    trial's row to the ledger; remembers the trials in flight. (Tune pickles its callbacks
    with the experiment; the live ``on_row`` is left out of that.)"""

    def __init__(self, plan: SearchPlan, run_dir: Path, first_number: int,
                 on_row: Callable[[TrialRow], None] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> None:
        self.plan, self.run_dir, self.first_number, self.on_row = plan, run_dir, first_number, on_row
        self.on_epoch = on_epoch
        self.partial: dict[str, dict[str, Any]] = {}
        self.in_flight: dict[str, Any] = {}
        #: our scheduler's last verdict with a prediction, per trial (`ray_schedulers`)
        self.verdicts: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "on_row": None, "on_epoch": None, "in_flight": {}}

    def number(self, trial: Any) -> int:
        # Tune's experiment tag starts with the trial's creation counter (1, 2, ...)
        return self.first_number + int(str(trial.experiment_tag).split("_", 1)[0]) - 1

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.in_flight[trial.trial_id] = trial
        if self.on_epoch is not None:
            self.on_epoch(self.number(trial), 0)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.partial[trial.trial_id] = result
        if self.on_epoch is not None and not result.get("row"):
            self.on_epoch(self.number(trial), int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, f"the trial's worker died {self.plan.space.retries + 1} times; see the Ray logs")

    def _finish(self, trial: Any, error: str | None) -> None:
        self.in_flight.pop(trial.trial_id, None)
        result = trial.last_result or self.partial.get(trial.trial_id, {})
        if result.get("row"):
            row = TrialRow.from_json(result["row"]).replace(trial=self.number(trial))
        else:  # stopped by the scheduler, or died, before its final report
            row = TrialRow(
                trial=self.number(trial), status=Status.FAILED if error else Status.STOPPED,
                sampled=dict(trial.config), max_fidelity=self.plan.epochs, fidelity=int(result.get("epoch", 0)),
                val_acc=result.get("val_acc"), reason=error, flops=result.get("flops"), params=result.get("params"),
            )
        verdict = self.verdicts.get(trial.trial_id)
        if verdict is not None:
            row = row.replace(curve_prediction=verdict.prediction, curve_sd=verdict.sd, curve_epoch=verdict.epoch)
        append_ledger(self.run_dir, row)
        if self.on_row is not None:
            self.on_row(row)

    def interrupted(self) -> list[TrialRow]:
        return [TrialRow(trial=self.number(t), status=Status.INTERRUPTED, sampled=dict(t.config),
                         max_fidelity=self.plan.epochs, reason="the run was stopped")
                for t in self.in_flight.values()]


def _first_number(rows: list[TrialRow]) -> int:
    """The number the next round's first trial gets: after every trial the ledger holds."""
    return max((r.trial for r in rows), default=-1) + 1


class RayBackend:
    """Trials as Ray Tune trials, locally or on the cluster at ``address``."""

    name = "ray"

    def __init__(self, plan: SearchPlan, run_dir: Path, address: str | None = None) -> None:
        self.plan, self.run_dir = plan, run_dir
        self.address = address or plan.space.address
        self.address_field = "--address" if address else "address"  # the space's field
        self.interrupted: list[TrialRow] = []

    def session(self) -> contextlib.AbstractContextManager[None]:
        read_ledger(self.run_dir)  # a damaged ledger is refused before Ray starts
        return ray_session(self.plan, self.run_dir, self.address, self.address_field)

    def warm(self, rows: list[TrialRow]) -> None:
        add_warm(self.run_dir, rows)

    def ledger(self) -> list[TrialRow]:
        return read_ledger(self.run_dir) + self.interrupted

    def run(self, on_rows: Callable[[list[TrialRow]], None], on_epoch: Callable[[int, int], None] | None = None) -> None:
        """Run trials; inside `session`. ``on_epoch`` hears each trial's per-epoch reports."""
        for _ in range(MAX_ROUNDS):
            rows = read_ledger(self.run_dir)
            todo = self._todo(rows)
            if todo == 0:
                break
            self._round(rows, todo, on_rows, on_epoch)
            if self.interrupted:
                raise KeyboardInterrupt
            finished_before = sum(r.finished for r in rows)
            if self.plan.grid is None and sum(r.finished for r in read_ledger(self.run_dir)) == finished_before:
                break  # a whole round of infeasible candidates: the space is (nearly) empty
        on_rows(self.ledger())

    def _todo(self, rows: list[TrialRow]) -> int:
        if self.plan.grid is not None:
            return len(self._missing_points(rows))
        return max(0, self.plan.target_trials - sum(r.finished for r in rows))

    def _missing_points(self, rows: list[TrialRow]) -> list[dict[str, Any]]:
        """The grid points no row holds yet, in the grid's order."""
        held = {r.point for r in rows}
        return [p for p in self.plan.grid_points if point_key(p) not in held]

    def _searcher(self, rows: list[TrialRow]) -> Any:
        """`OptunaSearch` on a study that already holds the finished trials (so the sampler
        resumes) and, for a grid, the points still to run, enqueued in order."""
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from coatsearch.search.samplers import make_sampler

        plan = self.plan
        multi = plan.space.multi_objective
        # a fresh SQLite file (Tune pickles the searcher; an in-memory storage does not pickle)
        path = self.run_dir / "tune" / "sampler.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        with quiet_optuna():
            storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
            study = optuna.create_study(storage=storage, study_name=plan.study,
                                        directions=plan.study_directions)
            study.add_trials(_finished_trials(plan, rows))  # so the sampler resumes where it was
            replayed = len(study.trials)
            if plan.grid is not None:
                for params in self._missing_points(rows):
                    study.enqueue_trial(params)
            return OptunaSearch(  # it loads the study just made: no "existing study" line
                space=plan.sample, metric=plan.metrics if multi else plan.metrics[0],
                mode=[d.value for d in plan.directions] if multi else plan.directions[0].value,
                # trial k of this study is the run's trial first + (k - replayed): seeded as such
                sampler=make_sampler(plan, offset=_first_number(rows) - replayed), seed=plan.space.seed,
                storage=storage, study_name=plan.study,
            )

    def _round(self, rows: list[TrialRow], todo: int, on_rows: Callable[[list[TrialRow]], None],
               on_epoch: Callable[[int, int], None] | None) -> None:
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        plan, space = self.plan, self.plan.space
        resources: dict[str, float] = {"cpu": space.resources.cpu, "gpu": space.resources.gpu, **space.resources.custom}
        if space.resources.accelerator_type:
            resources[f"accelerator_type:{space.resources.accelerator_type}"] = 0.001
        function = ray_trainables.trainable
        if space.resources.workers > 1:  # the replicas hold the resources, not the trial
            # (a head bundle cannot be empty: a token 1 MB of memory)
            function, resources = ray_trainables.data_parallel_trainable, {"cpu": 0, "memory": 2**20}
        trainable = tune.with_resources(tune.with_parameters(function, plan=plan), resources)
        first = _first_number(rows)
        callback = LedgerCallback(plan, self.run_dir, first, lambda row: on_rows(read_ledger(self.run_dir)), on_epoch)
        scheduler = tune_scheduler(plan, callback)
        storage = (self.run_dir / "tune").resolve()
        name = f"round-{first}"
        shutil.rmtree(storage / name, ignore_errors=True)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(self._searcher(rows), max_concurrent=space.concurrency),
                scheduler=scheduler, num_samples=todo, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), callbacks=[callback], verbose=0,
                failure_config=tune.FailureConfig(max_failures=space.retries),
            ),
        )
        # Tune's own advice after Ctrl-C (Tuner.restore) does not apply: the ledger resumes;
        # and the searcher's study, loaded again in Tune, is no "existing study" to the user
        tune_log = logging.getLogger("ray.tune")
        level = tune_log.level
        tune_log.setLevel(logging.ERROR)
        try:
            with quiet_optuna():
                tuner.fit()
        except KeyboardInterrupt:
            self.interrupted = callback.interrupted()
            raise
        finally:
            tune_log.setLevel(level)
        self.interrupted = callback.interrupted()


def tune_scheduler(plan: SearchPlan, callback: LedgerCallback | None = None) -> Any:
    """Tune's scheduler for the plan's ``early_stopping``: ASHA, or for ``hyperband`` ASHA
    with every bracket the epochs allow (Tune's asynchronous Hyperband, whose brackets
    start their rungs later and later as Optuna's pruner's do); any other scheduler is
    ours, run by `CourseTrialScheduler` with the trials numbered as ``callback`` numbers
    them and its verdicts handed to it for the rows."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from coatsearch.search.stopping import bracket_count

    early = plan.space.early_stopping
    if early.kind == "none":
        return FIFOScheduler()
    if early.kind not in ("asha", "hyperband"):
        from coatsearch.search.ray_schedulers import CourseTrialScheduler
        from coatsearch.search.rungs import make_scheduler

        ours = make_scheduler(plan)
        assert ours is not None
        callback = callback or LedgerCallback(plan, Path("."), 0)
        scheduler = CourseTrialScheduler(plan, ours, callback.number)
        callback.verdicts = scheduler.verdicts
        return scheduler
    most = bracket_count(early.grace_period, early.reduction_factor, plan.epochs)
    return ASHAScheduler(
        time_attr="training_iteration", metric=early.metric, mode=early.direction.value, max_t=plan.epochs,
        grace_period=early.grace_period, reduction_factor=early.reduction_factor,
        brackets=(early.brackets or most) if early.kind == "hyperband" else 1,
    )


def _finished_trials(plan: SearchPlan, rows: list[TrialRow]) -> list[Any]:
    """The ledger's finished trials as Optuna trials recorded against the space's
    distributions (`Domain.distribution`); one whose objectives were not measured is a
    failed trial, as Optuna records a NaN told to it. A row whose values no longer fit the
    space is left out."""
    import optuna
    from optuna.trial import TrialState

    domains = plan.space.params
    trials = []
    for row in rows:
        if row.status not in (Status.COMPLETE, Status.STOPPED):
            continue
        names = [name for name in domains if name in row.sampled]
        values = [row.objective(m) for m in plan.metrics]
        measured = all(v == v for v in values)
        try:
            trials.append(optuna.trial.create_trial(
                params={name: row.sampled[name] for name in names},
                distributions={name: domains[name].distribution() for name in names},
                values=values if measured else None, state=TrialState.COMPLETE if measured else TrialState.FAIL))
        except ValueError:
            continue
    return trials
