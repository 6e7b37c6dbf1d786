"""Ranking a results table's trials: which one is best.

`best_configuration` reads a table of rankable trials (`coatsearch.results.ranked`) and
returns the configuration best by the run's own objectives averaged over seeds, with the
trial of it that `coatsearch best` hands on as a training file and a run's last line names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from coatsearch.analysis.design import SEED


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
    ranked = ranked.dropna(subset=[*(m for m, _ in metrics), "spec"])
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
