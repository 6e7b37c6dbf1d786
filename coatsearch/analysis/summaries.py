"""Per configuration (one combination of the design's factors): the trials' count, and
the mean, spread and 95% interval of each metric over seeds (``summary.csv``)."""

from __future__ import annotations

import math

import pandas as pd

from coatsearch import perimage
from coatsearch.analysis.design import Design
from coatsearch.analysis.stats import mean_ci
from coatsearch.results import ranked

#: Metrics summarised per configuration, with how they are shown.
METRICS = {
    "val_acc": "val acc (%)",
    "test_acc": "test acc (%)",
    "train_eval_acc": "train acc, eval (%)",
    "gap": "gap (pp)",
    "train_acc_running": "train acc, running (%)",
    "train_loss_running": "train loss, running",
    "gap_running": "gap, running (pp)",  # tables written before train_eval_acc existed
}
#: Each accuracy with the column holding the size of the set it was measured on.
EVALUATED = {"val_acc": "val_images", "test_acc": "test_images"}
#: Each accuracy with the column holding its trials' per-image correctness.
PER_IMAGE = {"val_acc": "val_correct", "test_acc": "test_correct"}
#: The network's shape, blocks and widths per stage: a budget's matching picks it, so a
#: configuration's name alone does not say what was trained.
SHAPE = ("blocks", "channels")


def summarise(table: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Mean and std over seeds of each metric per configuration (in `Design.sort`'s
    order), full-fidelity trials only; one configuration, ``all``, when no factor varies
    (seeds alone)."""
    rows = design.sort(ranked(table))
    columns = list(design.factors)
    if not columns:
        rows = rows.assign(configuration="all")
        columns = ["configuration"]
    aggregated = rows.groupby(columns, sort=False, dropna=False)
    summary = aggregated.size().rename("n").to_frame()
    for metric in METRICS:
        if metric in rows and rows[metric].notna().any():
            summary[f"{metric}_mean"] = aggregated[metric].mean()
            summary[f"{metric}_std"] = aggregated[metric].std(ddof=1)
    for metric, size in EVALUATED.items():
        if metric in rows and rows[metric].notna().any():
            summary[f"{metric}_ci95"] = aggregated.apply(lambda g, m=metric, s=size: ci_half_width(g, m, s))
    summary["flops_mean"] = aggregated["flops"].mean()
    summary["params_mean"] = aggregated["params"].mean()
    for column in SHAPE:
        if column in rows:
            summary[column] = aggregated[column].agg(_one_value)
    return summary.reset_index()


def _one_value(values: pd.Series) -> object:
    """The one value a configuration's trials share, ``varies`` where they differ (a
    factor the design does not name changed the network)."""
    distinct = values.dropna().unique()
    if len(distinct) == 0:
        return math.nan
    return distinct[0] if len(distinct) == 1 else "varies"


def ci_half_width(group: pd.DataFrame, metric: str, size_column: str) -> float:
    """Half the 95% interval of the mean: the seeds' spread plus the evaluation images'
    error, measured from per-image records where every trial has them, else the binomial
    bound when the set's size is recorded (`stats.mean_ci`); NaN for one seed without
    either."""
    rows = group[group[metric].notna()]
    values = rows[metric].to_numpy()
    if not len(values):
        return math.nan
    sizes = rows[size_column].dropna() if size_column in rows else pd.Series(dtype=float)
    n_eval = int(sizes.iloc[0]) if len(sizes) else None
    column = PER_IMAGE.get(metric)
    correct = perimage.matrix(rows[column]) if column is not None and column in rows else None
    if len(values) < 2 and n_eval is None and correct is None:
        return math.nan
    _, low, high = mean_ci(values, n_eval, correct)
    return (high - low) / 2
