"""What a Ray worker runs for one trial: the trial itself (`trainable`), or a Ray Train
`TorchTrainer` of replicas for a data-parallel trial (`data_parallel_trainable`); both
report each epoch the same way, so schedulers and the ledger see every trial alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coatsearch.objectives import Direction
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.trial import run_trial

#: A worker's row before the driver numbers it (`LedgerCallback.number`): a valid trial
#: number, replaced when the row reaches the ledger.
UNNUMBERED = 0


def trainable(config: dict[str, Any], plan: SearchPlan) -> None:
    """Ray function trainable: one trial, reporting every epoch."""
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()[:12]
    report, final = _reports(plan, tune.report)
    final(run_trial(plan, UNNUMBERED, config, report=report, threads=plan.space.trial_threads, node=node))


def data_parallel_trainable(config: dict[str, Any], plan: SearchPlan) -> None:
    """Ray function trainable of a data-parallel trial (``resources.workers`` > 1): a Ray
    Train `TorchTrainer` of ``workers`` replicas (gloo on CPUs, NCCL on GPUs), each given
    ``resources.cpu``/``gpu``; replica 0's per-epoch reports reach Tune through
    `TuneReportCallback`, so schedulers and the ledger see the trial as any other. The
    trial itself holds no resources: its replicas do."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = plan.space.resources
    per_worker: dict[str, float] = {"CPU": resources.cpu, **resources.custom}
    if resources.gpu:
        per_worker["GPU"] = resources.gpu
    trial_id = ray.tune.get_context().get_trial_id() or "trial"
    trainer = TorchTrainer(
        _replica_loop,
        train_loop_config={"params": config, "plan": plan},
        torch_config=TorchConfig(backend="nccl" if resources.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpu > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"train-{trial_id}", storage_path=str(Path(ray.tune.get_context().get_trial_dir()).resolve()),
                             callbacks=[TuneReportCallback()],  # type: ignore[list-item]
                             failure_config=FailureConfig(max_failures=0)),
    )
    trainer.fit()


def _replica_loop(loop_config: dict[str, Any]) -> None:
    """One replica of a data-parallel trial: the trial as `run_trial` runs it, with `fit`
    told its place among the replicas; every replica reports each epoch (Ray Train
    reports are collective), replica 0's report is the trial's."""
    import ray.train
    from ray.train import get_context

    from coatsearch.train.loop import CURRENT_REPLICAS, Replicas

    plan: SearchPlan = loop_config["plan"]
    context = get_context()
    replicas = Replicas(rank=context.get_world_rank(), world=context.get_world_size())
    report, final = _reports(plan, ray.train.report)
    token = CURRENT_REPLICAS.set(replicas)
    try:
        row = run_trial(plan, UNNUMBERED, loop_config["params"], report=report, threads=plan.space.trial_threads,
                        node=context.get_node_id()[:12] if hasattr(context, "get_node_id") else None)
    finally:
        CURRENT_REPLICAS.reset(token)
    final(row.replace(workers=replicas.world))


def _reports(plan: SearchPlan, send: Callable[[dict[str, Any]], None]
             ) -> tuple[Callable[[int, dict[str, Any]], bool], Callable[[TrialRow], None]]:
    """A trial's per-epoch report (for `run_trial`) and its final one, both through ``send``
    (Tune's or Ray Train's). Every report carries the objectives and the early-stopping
    metric (worst values when not measured yet, so a cut-short trial never looks ideal to
    the searcher); the last epoch goes out with the final row."""
    names = list(dict.fromkeys([*plan.metrics, plan.space.early_stopping.metric]))
    directions = {m: plan.direction_of(m) for m in names}

    def report(epoch: int, metrics: dict[str, Any]) -> bool:
        if epoch < plan.epochs:
            send({**{m: _metric_value(metrics.get(m), directions[m]) for m in names}, "epoch": epoch, "row": ""})
        return False

    def final(row: TrialRow) -> None:
        send({**{m: _metric_value(row.objective(m), directions[m]) for m in names}, "epoch": row.fidelity,
              "row": row.to_json()})

    return report, final


def _metric_value(value: Any, direction: Direction) -> float:
    """The metric, or its worst value when missing or NaN (failed, infeasible, not yet)."""
    if value is None or value != value:
        return direction.worst
    return float(value)
