"""Search on Ray Tune: the same space and trials, on one machine or a cluster.

Sampling goes through `OptunaSearch` with the same define-by-run function and sampler
as the optuna backend; early stopping through Ray's `ASHAScheduler` on validation
accuracy. Locally Ray starts embedded and is shut down at the end; ``address`` (or
``--address auto|ray://...``) joins an existing cluster of GPU/TPU nodes unchanged,
with per-trial resources from the space.

Multi-objective searches put the metric and mode lists on the searcher only (Ray
rejects lists in `TuneConfig`), and ASHA gets its own single metric. A trial ASHA stops
early is still recorded as complete by Tune; its row keeps status ``stopped`` and its
fidelity, so it is never ranked beside full-fidelity trials.

Each epoch is reported to Tune with the results row so far; the last report, sent after
training, carries the final row. A driver-side callback writes the results table as
trials finish. An interrupted experiment is restored (`Tuner.restore`) on the next run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from coatsearch.search.candidate import sample_params
from coatsearch.search.trial import run_trial
from coatsearch.space import SearchSpace

EXPERIMENT = "ray"


class DefineByRun:
    """Picklable define-by-run space for `OptunaSearch` (Tune saves the searcher's state)."""

    def __init__(self, space_data: dict[str, Any]) -> None:
        self.space_data = space_data

    def __call__(self, trial: Any) -> None:
        from coatsearch.space import space_from_dict

        sample_params(space_from_dict(self.space_data), trial)


def _trainable(config: dict[str, Any], space_data: dict[str, Any]) -> None:
    """Ray function trainable: one trial, reporting every epoch."""
    import ray
    from ray import tune

    from coatsearch.space import space_from_dict

    space = space_from_dict(space_data)
    number = -1  # the driver numbers trials (ResultsCallback), in the order Tune made them
    node = ray.get_runtime_context().get_node_id()[:12]
    # every report carries the objectives and the early-stopping metric (worst values when
    # not measured yet, so a cut-short trial never looks ideal to the searcher)
    names = list(dict.fromkeys([o.metric for o in space.objectives] + [space.early_stopping.metric]))

    def report(epoch: int, metrics: dict[str, Any]) -> bool:
        if epoch < space.epochs:  # the last epoch goes out with the final row
            tune.report({**{m: _metric_value(metrics, m) for m in names}, "epoch": epoch, "row": ""})
        return False

    row = run_trial(space, number, config, report=report, threads=space.trial_threads, node=node)
    tune.report({**{m: _metric_value(row, m) for m in names}, "epoch": row.get("fidelity", 0),
                 "row": json.dumps(row, default=str)})


def _metric_value(row: dict[str, Any], metric: str) -> float:
    """The metric, or its worst value when missing or NaN (failed, infeasible, not yet)."""
    value = row.get(metric)
    if value is None or value != value:
        return 0.0 if metric.endswith("acc") else float(1e30)
    return float(value)


class ResultsCallback(Callback):
    """Upserts each finished trial's row into the results table (driver side).

    It keeps no rows in memory: the table on disk is read, updated and rewritten, so a
    callback restored with an interrupted experiment continues the same table.
    ``on_rows`` (a live progress display) is dropped when Tune pickles the callback.
    """

    def __init__(self, space_data: dict[str, Any], table_path: str, on_rows: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        super().__init__()
        self.space_data, self.table_path, self.on_rows = space_data, table_path, on_rows
        self.partial: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "on_rows": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.partial[trial.trial_id] = result

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "the trial's worker raised an error; see the Ray logs")

    def _finish(self, trial: Any, error: str | None) -> None:
        from coatsearch.results import upsert_rows

        result = trial.last_result or self.partial.get(trial.trial_id, {})
        if result.get("row"):
            row = json.loads(result["row"])
            row["trial"] = _trial_number(trial)
        else:  # stopped by the scheduler (or died) before its final report
            from coatsearch.space import space_from_dict

            epochs = space_from_dict(self.space_data).epochs
            row = {
                "trial": _trial_number(trial),
                "status": "failed" if error else "stopped",
                "fidelity": int(result.get("epoch", 0)),
                "max_fidelity": epochs,
                "val_acc": result.get("val_acc"),
                "reason": error,
                **{f"param.{k}": v for k, v in trial.config.items()},
                **{m: result[m] for m in ("flops", "params") if m in result},
            }
        rows = upsert_rows(Path(self.table_path), [row])
        if self.on_rows is not None:
            self.on_rows(rows)


def _trial_number(trial: Any) -> int:
    """Tune's experiment tag starts with the trial's creation counter (1, 2, ...)."""
    return int(str(trial.experiment_tag).split("_", 1)[0]) - 1


def run_ray(
    space: SearchSpace,
    run_dir: Path,
    table_path: Path,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    address: str | None = None,
) -> None:
    """Run (or restore and finish) the Tune experiment of a space."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from coatsearch.search.optuna_backend import make_sampler

    address = address or space.address
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=None)
    try:
        metrics = [o.metric for o in space.objectives]
        modes = [o.direction for o in space.objectives]
        searcher = OptunaSearch(
            space=DefineByRun(space.to_dict()),
            metric=metrics if space.multi_objective else metrics[0],
            mode=modes if space.multi_objective else modes[0],
            sampler=make_sampler(space),
            seed=space.seed,
        )
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=space.concurrency)
        if space.early_stopping.kind == "asha":
            scheduler: Any = ASHAScheduler(
                time_attr="training_iteration", metric=space.early_stopping.metric,
                mode=space.early_stopping.mode, max_t=space.epochs,
                grace_period=space.early_stopping.grace_period,
                reduction_factor=space.early_stopping.reduction_factor,
            )
        else:
            scheduler = FIFOScheduler()
        resources: dict[str, float] = {"cpu": space.resources.cpu, "gpu": space.resources.gpu, **space.resources.custom}
        if space.resources.accelerator_type:
            resources[f"accelerator_type:{space.resources.accelerator_type}"] = 0.001
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, space_data=space.to_dict()), resources
        )
        callback = ResultsCallback(space.to_dict(), str(table_path), on_rows)
        storage = str((run_dir / "tune").resolve())
        path = os.path.join(storage, EXPERIMENT)
        if tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg, scheduler=scheduler, num_samples=space.trials,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=storage, callbacks=[callback], verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
        tuner.fit()
    finally:
        ray.shutdown()
