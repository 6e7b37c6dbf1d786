"""What each searched parameter did: per value, the mean validation accuracy with a 95%
interval, every pair of values compared, and (when two or more vary) their importances.

The interval combines the spread over seeds with the validation set's own binomial error
(`coatsearch.stats.mean_ci`), so one seed still gets an honest interval. Comparisons are
Welch tests with Holm's correction across all pairs of one parameter. These are small info
objects: the figures draw them, the tables print them, the tests assert on them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coatsearch.results import ranked
from coatsearch.stats import holm, mean_ci, welch
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


@dataclass(frozen=True)
class Comparison:
    parameter: str
    first: str
    second: str
    difference: float  # mean(first) - mean(second)
    ci95: tuple[float, float]
    p: float
    p_holm: float



def searched(table: pd.DataFrame, parameters: tuple[str, ...] = ()) -> list[str]:
    """The searched parameters (``param.`` columns but the seed), those named first."""
    columns = [f"param.{p}" for p in parameters if f"param.{p}" in table]
    columns += [c for c in table.columns if c.startswith("param.") and c not in columns]
    return [c for c in columns if c != "param.seed" and table[c].nunique(dropna=True) > 1]


def effect(table: pd.DataFrame, column: str) -> Effect | None:
    """Accuracy per value of ``column`` over the full-fidelity complete trials."""
    rows = ranked(table).dropna(subset=["val_acc", column])
    if rows.empty:
        return None
    numeric = pd.api.types.is_numeric_dtype(rows[column])
    values = sorted(rows[column].unique(), key=lambda v: (float(v) if numeric else 0, str(v)))
    levels = []
    for value in values:
        part = rows[rows[column] == value]
        accuracies = tuple(float(a) for a in part["val_acc"])
        n_eval = int(part["val_images"].dropna().iloc[0]) if "val_images" in part and part["val_images"].notna().any() else None
        mean, low, high = mean_ci(accuracies, n_eval)
        levels.append(Level(value_label(value), accuracies, mean, low, high))
    return Effect(column.removeprefix("param."), tuple(levels), numeric)


def comparisons(found: Effect) -> list[Comparison]:
    """Every pair of levels with at least two trials each, Welch-tested, Holm-corrected."""
    pairs = [(a, b) for a, b in itertools.combinations(found.levels, 2) if a.n >= 2 and b.n >= 2]
    tests = [welch(a.accuracies, b.accuracies) for a, b in pairs]
    adjusted = holm([t.p for t in tests]) if tests else []
    return [Comparison(found.parameter, a.value, b.value, t.difference, t.ci95, t.p, p_holm)
            for (a, b), t, p_holm in zip(pairs, tests, adjusted)]


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


def comparisons_frame(found: list[Comparison]) -> pd.DataFrame:
    rows = [{"parameter": c.parameter, "first": c.first, "second": c.second, "difference": c.difference,
             "ci95_low": c.ci95[0], "ci95_high": c.ci95[1], "p": c.p, "p_holm": c.p_holm} for c in found]
    return pd.DataFrame(rows, columns=["parameter", "first", "second", "difference", "ci95_low", "ci95_high", "p", "p_holm"])


def jitter(n: int, width: float = 0.12, seed: int = 0) -> np.ndarray:
    """Small horizontal offsets so seeds at one value do not hide each other."""
    return np.random.default_rng(seed).uniform(-width, width, n)
