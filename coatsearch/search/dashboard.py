"""What optuna-dashboard shows of a run's study (``optuna-dashboard sqlite:///RUN_DIR/study.db``):
the objectives under their metric names, each epoch's value of the first objective as an
intermediate value (a learning curve; Optuna takes them in single-objective studies only),
and the fields a person filters or sorts trials on as user attributes of their own, beside
the whole ``row`` the ledger reads (which the dashboard shows cut at 1,024 characters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow

#: The row's fields stored as user attributes of their own, for the dashboard's filters.
FILTER_FIELDS = ("status", "layout", "blocks", "channels", "image_size", "flops", "params", "val_acc", "test_acc",
                 "fidelity", "wall_time", "seed", "reason")


def name_metrics(study: optuna.Study, plan: SearchPlan) -> None:
    """The study's objectives named after the plan's metrics ("val_acc", not "Objective 0")."""
    names = list(plan.metrics)
    if study.metric_names != names:
        study.set_metric_names(names)


def report_epoch(trial: optuna.Trial, plan: SearchPlan, epoch: int, metrics: Mapping[str, Any]) -> None:
    """The epoch's value of the first objective as the trial's intermediate value at step
    ``epoch``; nothing in a multi-objective study, where Optuna refuses them."""
    if plan.space.multi_objective:
        return
    value = metrics.get(plan.metrics[0])
    if isinstance(value, int | float) and math.isfinite(value):
        trial.report(float(value), epoch)


def row_attrs(row: TrialRow) -> dict[str, Any]:
    """The row's `FILTER_FIELDS` (those it has), as the user attributes they are stored as."""
    return {name: str(value) if name == "status" else value
            for name in FILTER_FIELDS if (value := getattr(row, name)) is not None}


def set_row_attrs(trial: optuna.Trial, row: TrialRow) -> None:
    """The row's `FILTER_FIELDS` (those it has) as user attributes, each its own column."""
    for name, value in row_attrs(row).items():
        trial.set_user_attr(name, value)
