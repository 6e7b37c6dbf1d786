"""Ranking a results table's trials: its Pareto set, its top trials, the configuration
best by the run's own objectives averaged over seeds (with the trial of it that `coatsearch
best` hands on as a training file and a run's last line names); and the two figures the
report ranks trials by beside those (the final generalization gap, and the FLOP band of
the design-space view).

Every function reads the table (or its rankable trials, `coatsearch.results.ranked`) and
returns plain data, so the terminal, the HTML report and a study's README show one ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from coatsearch.analysis.design import SEED
from coatsearch.analysis.fronts import pareto_front
from coatsearch.units import format_count

#: The default FLOP band of the design-space view: this fraction either side of the median.
DEFAULT_BAND = 0.10


def front_objectives(objectives: Sequence[tuple[str, str]], matched: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The objectives a run is ranked by: its own, less a cost every candidate was matched to
    (``matched``: the budget's targets). Such a cost differs between trials by rounding
    only, and a front over it is noise; with one objective left there is no front, only
    the best trials by it. The one rule for ``pareto.csv``, the terminal and the report."""
    kept = tuple((m, d) for m, d in objectives if m not in matched)
    return kept or tuple(objectives)


def pareto_set(table: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The non-dominated full-fidelity trials under the run's objectives (``pareto.csv``);
    empty when the table has no column for one of them."""
    if any(m not in table for m, _ in objectives):
        return table.iloc[0:0]
    return pareto_front(table, list(objectives)).reset_index(drop=True)


def top_trials(ranked: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` ranked trials with the best validation accuracy (ties: the earlier trial)."""
    found = ranked.dropna(subset=["val_acc"])
    return found.sort_values(["val_acc", "trial"], ascending=[False, True]).head(n).reset_index(drop=True)


@dataclass(frozen=True)
class BestConfiguration:
    """The best configuration of a run and the trial of it to hand on.

    ``values``: the configuration's sampled values (every ``param.`` column but the seed);
    ``means``: each objective's mean over its ``seeds`` trials; ``trial``: the row of its
    trial whose first objective is nearest that mean (ties: the earlier trial), the one a
    training file reproduces."""

    values: dict[str, Any]
    means: dict[str, float]
    seeds: int
    trial: pd.Series


def best_configuration(ranked: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> BestConfiguration | None:
    """The configuration best by the run's own objectives, averaged over its seeds: the
    first objective decides, the later ones break ties, then the earlier first trial.
    None when no trial is rankable."""
    metrics = [(m, d) for m, d in objectives if m in ranked] or [("val_acc", "max")]
    ranked = ranked.dropna(subset=[*(m for m, _ in metrics), *(["spec"] if "spec" in ranked else [])])
    if ranked.empty:
        return None
    keys = [c for c in ranked.columns if c.startswith("param.") and c != SEED]
    groups = ranked.assign(_config=ranked[keys].astype(str).agg("|".join, axis=1) if keys else "all")
    means = groups.groupby("_config", sort=False).agg(
        **{m: (m, "mean") for m, _ in metrics}, _first=("trial", "min"), _n=("trial", "size"))
    order = means.sort_values([*(m for m, _ in metrics), "_first"],
                              ascending=[*(d == "min" for _, d in metrics), True])
    key = order.index[0]
    members = groups[groups["_config"] == key]
    primary, _ = metrics[0]
    distance = (members[primary] - order.loc[key, primary]).abs()
    trial = members.assign(_d=distance).sort_values(["_d", "trial"]).iloc[0].drop(["_config", "_d"])
    values = {k.removeprefix("param."): _plain(trial[k]) for k in keys if trial[k] == trial[k]}
    return BestConfiguration(values, {m: float(order.loc[key, m]) for m, _ in metrics}, int(order.loc[key, "_n"]), trial)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def final_gap(frame: pd.DataFrame) -> pd.Series:
    """Train (eval mode, final weights) minus validation accuracy at the last epoch (the
    row's ``gap``, else computed)."""
    return frame["gap"].fillna(frame["train_eval_acc"] - frame["val_acc"])


def flop_band(flops: pd.Series, band: float | tuple[float, float] | None) -> tuple[float, float, str]:
    """``(low, high, how)``: a relative band around the median FLOPs, or an absolute one."""
    if isinstance(band, tuple):
        low, high = band
        return low, high, "as given"
    half = DEFAULT_BAND if band is None else float(band)
    median = float(flops.median())
    return median * (1 - half), median * (1 + half), f"±{half:.0%} of the median, {format_count(median)}"
