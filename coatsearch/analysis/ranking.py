"""Ranking a results table's trials: its Pareto set, its top trials, the best trial by the
run's own objectives; and the two figures the report ranks trials by beside those (the
final generalization gap, and the FLOP band of the design-space view).

Every function reads the table (or its rankable trials, `coatsearch.results.ranked`) and
returns plain data, so the terminal, the HTML report and a study's README show one ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from coatsearch.analysis.fronts import pareto_front
from coatsearch.units import format_count

#: The default FLOP band of the design-space view: this fraction either side of the median.
DEFAULT_BAND = 0.10


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


def best_trial(ranked: pd.DataFrame, objectives: Sequence[tuple[str, str]] = (("val_acc", "max"),)) -> pd.Series | None:
    """The ranked trial that is best by the run's objectives, in their order (the first
    decides, the next break its ties, then the earlier trial), or None. Only trials that
    have a network and every objective's value are ranked."""
    metrics = [m for m, _ in objectives]
    if any(m not in ranked for m in metrics):
        return None
    found = ranked.dropna(subset=[*metrics, *(["spec"] if "spec" in ranked else [])])
    if found.empty:
        return None
    ascending = [d == "min" for _, d in objectives]
    return found.sort_values([*metrics, "trial"], ascending=[*ascending, True]).iloc[0]


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
