"""What each factor did: per value, the mean validation accuracy with a 95% interval, and
(when two or more vary) their importances.

The interval combines the spread over seeds with the validation images' own sampling error
(`stats.mean_ci`: measured from the trials' per-image records where they have them,
else bounded by the binomial), so one seed still gets an honest interval. The tests between values
are `coatsearch.analysis.comparisons`. These are small info objects: the figures draw
them, the tables print them, the tests assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from coatsearch import perimage
from coatsearch.analysis.design import Design
from coatsearch.analysis.stats import mean_ci
from coatsearch.results import ranked
from coatsearch.units import value_label


@dataclass(frozen=True)
class Level:
    """One value of a parameter: its trials' accuracies and their 95% interval."""

    value: str
    accuracies: tuple[float, ...]
    mean: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.accuracies)


@dataclass(frozen=True)
class Effect:
    parameter: str
    levels: tuple[Level, ...]
    numeric: bool  # values are numbers: the x axis is a number line

    def best(self) -> Level:
        return max(self.levels, key=lambda level: level.mean)


def effect(table: pd.DataFrame, column: str, design: Design | None = None) -> Effect | None:
    """Accuracy per value of ``column`` over the full-fidelity complete trials, the values
    in the design's order (the space's), else sorted."""
    rows = ranked(table).dropna(subset=["val_acc", column])
    if rows.empty:
        return None
    numeric = pd.api.types.is_numeric_dtype(rows[column])
    values = (design or Design()).order(rows, column)
    levels = []
    for value in values:
        part = rows[rows[column] == value]
        accuracies = tuple(float(a) for a in part["val_acc"])
        sizes = part["val_images"].dropna() if "val_images" in part else pd.Series(dtype=float)
        n_eval = int(sizes.iloc[0]) if len(sizes) else None
        correct = perimage.matrix(part["val_correct"]) if "val_correct" in part else None
        mean, low, high = mean_ci(accuracies, n_eval, correct)
        levels.append(Level(value_label(value), accuracies, mean, low, high))
    return Effect(column.removeprefix("param."), tuple(levels), numeric)


def importances(table: pd.DataFrame, columns: list[str]) -> dict[str, float] | None:
    """Optuna's parameter importances (its default evaluator, which needs no extra package)
    for validation accuracy; None unless at
    least two parameters vary and there are enough trials to tell them apart."""
    if len(columns) < 2:
        return None
    rows = ranked(table).dropna(subset=["val_acc", *columns])
    if len(rows) < 4:
        return None
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        distributions: dict[str, BaseDistribution] = {
            c: CategoricalDistribution(sorted({value_label(v) for v in rows[c]})) for c in columns
        }
        for _, row in rows.iterrows():
            study.add_trial(optuna.trial.create_trial(
                params={c: value_label(row[c]) for c in columns}, distributions=distributions, value=float(row["val_acc"]),
            ))
        found = optuna.importance.get_param_importances(study)
    finally:
        optuna.logging.set_verbosity(level)
    return {name.removeprefix("param."): float(value) for name, value in found.items()}


def effects_frame(effects: list[Effect]) -> pd.DataFrame:
    """One row per parameter value: n, mean and the 95% interval (``effects.csv``)."""
    rows = [{"parameter": e.parameter, "value": lv.value, "n": lv.n, "val_acc_mean": lv.mean,
             "val_acc_ci95_low": lv.low, "val_acc_ci95_high": lv.high} for e in effects for lv in e.levels]
    return pd.DataFrame(rows, columns=["parameter", "value", "n", "val_acc_mean", "val_acc_ci95_low", "val_acc_ci95_high"])
