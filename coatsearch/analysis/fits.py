"""Scaling fits: validation error against FLOPs, per group of a scaling study.

- `fit_log_linear`: ``log(error) = log(a) - b log(FLOPs / F0)``, i.e. error falling as
  ``FLOPs^-b``, by least squares over every trial of a ladder, with a t interval of
  ``b`` and, where budgets are repeated, a lack-of-fit test of the straight line;
- `slope_difference`: whether two groups' ``b`` differ (Welch-Satterthwaite);
- `crossing`: where two fitted lines cross;
- `scaling_fits`: the ladder of every group of a table, fitted once, for the report's
  figure and the study README's table alike.

Why two parameters: a saturating power law ``a F^-b + c`` has three, and a study's ladder
has four budgets: ``b`` and the floor ``c`` trade off against each other, so the data
cannot pin them (a bootstrap of such a fit returns intervals that reflect the optimiser's
bounds, not the data). A straight line in log-log space is identified by any two budgets
and has an exact interval; over the 8x a study spans it is the local exponent, and the
lack-of-fit test says when the points bend away from it.

The interval of ``b`` adds the evaluation images' error to the residual spread over seeds
and budgets, as every slope in `coatsearch.analysis.stats` does (`stats.contrast`, carried
to log error by the delta method). The same images score every budget, but each budget is
a different network that errs on its own images: that budget-by-image part does not cancel
in a slope and does not show in the spread over seeds. Per-image records measure it;
without them it is bounded by each trial's binomial error (cautious: the shared part, which
does cancel, is counted too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from coatsearch import perimage
from coatsearch.analysis.stats import Part, Test, contrast, holm, t_test
from coatsearch.errors import first_line
from coatsearch.results import ranked
from coatsearch.units import value_label


@dataclass(frozen=True)
class LogLinear:
    """``error = a * (flops / f0) ** -b``, fitted in log space; ``b_ci`` is the 95% t
    interval (``df``: Welch-Satterthwaite's over its parts; ``n - 2`` for the residual
    alone). ``lack_of_fit_p``: the F test of the line against the budget means (None
    without three budgets and repeats at some budget)."""

    a: float
    b: float
    f0: float
    se_b: float
    df: float
    b_ci: tuple[float, float]
    n: int
    budgets: int
    lack_of_fit_p: float | None

    def __call__(self, flops: np.ndarray | float) -> np.ndarray | float:
        return self.a * (np.asarray(flops, float) / self.f0) ** -self.b

    @property
    def per_doubling(self) -> float:
        """The relative change of error for each doubling of FLOPs (``2^-b - 1``)."""
        return 2.0 ** -self.b - 1


def fit_log_linear(flops: Sequence[float], error: Sequence[float], n_eval: int | None = None,
                   correct: np.ndarray | None = None) -> LogLinear:
    """Fit one ladder; `ValueError` (one line, saying why) when it cannot be: fewer than
    two budgets, fewer than three trials, or an error of zero (no logarithm).
    ``correct`` (trials x images) or ``n_eval`` (the validation set's size) add the
    images' part to the interval of ``b`` (see the module)."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    budgets = np.unique(f)
    if len(budgets) < 2:
        raise ValueError("fit: needs at least two budgets")
    if len(f) < 3:
        raise ValueError("fit: needs at least three trials for an interval")
    if (e <= 0).any() or not np.isfinite(e).all():
        raise ValueError("fit: an error of zero or less has no logarithm")
    f0 = float(np.exp(np.log(f).mean()))
    x, y = np.log(f / f0), np.log(e)
    fitted = sps.linregress(x, y)
    slope = contrast(x, y, x - x.mean(), 1, correct, n_eval, transform=(1 - e, -1 / e))
    b = -slope.difference
    return LogLinear(a=float(math.exp(fitted.intercept)), b=b, f0=f0, se_b=slope.se, df=slope.df,
                     b_ci=(-slope.ci95[1], -slope.ci95[0]), n=len(f), budgets=len(budgets),
                     lack_of_fit_p=_lack_of_fit(x, y, fitted.slope, fitted.intercept))


def _lack_of_fit(x: np.ndarray, y: np.ndarray, slope: float, intercept: float) -> float | None:
    """The classical F test of a line against the means of repeated x (pure error from
    the repeats, lack of fit from the means' distance to the line)."""
    levels = np.unique(x)
    pure_df, lof_df = len(x) - len(levels), len(levels) - 2
    if pure_df < 1 or lof_df < 1:
        return None
    pure = sum(float(((y[x == v] - y[x == v].mean()) ** 2).sum()) for v in levels)
    residual = float(((y - intercept - slope * x) ** 2).sum())
    if pure <= 0:
        return 0.0 if residual > 0 else 1.0
    f_stat = ((residual - pure) / lof_df) / (pure / pure_df)
    return float(sps.f.sf(max(f_stat, 0.0), lof_df, pure_df))


def slope_difference(first: LogLinear, second: LogLinear) -> Test:
    """``b`` of ``first`` minus ``b`` of ``second``, a t test with Welch-Satterthwaite df
    (the two ladders' trials are independent)."""
    return t_test("slopes, Welch", first.b - second.b, [Part(first.se_b**2, first.df), Part(second.se_b**2, second.df)])


def crossing(first: LogLinear, second: LogLinear, low: float, high: float) -> float | None:
    """FLOPs in ``[low, high]`` where the two fitted lines cross, or None when one stays
    below the other there (or they are parallel)."""
    # log a1 - b1 (L - l1) = log a2 - b2 (L - l2), with L = log FLOPs and l = log f0
    if first.b == second.b:
        return None
    at = (math.log(first.a) - math.log(second.a) + first.b * math.log(first.f0) - second.b * math.log(second.f0)) / (
        first.b - second.b)
    return math.exp(at) if math.log(low) <= at <= math.log(high) else None


@dataclass(frozen=True)
class GroupLadder:
    """One group's trials on a scaling ladder and its fit (None when it failed;
    ``failure`` says why)."""

    group: str
    flops: tuple[float, ...]
    error: tuple[float, ...]
    fit: LogLinear | None
    failure: str | None = None

    def error_at(self, which: str) -> float:
        """Mean error at the least (``"min"``) or most (``"max"``) FLOPs measured."""
        f, e = np.asarray(self.flops), np.asarray(self.error)
        return float(e[f == (f.min() if which == "min" else f.max())].mean())


@dataclass(frozen=True)
class ScalingFits:
    """Every group of a scaling study, fitted: the report draws them, the README tables them."""

    group_column: str
    ladders: tuple[GroupLadder, ...]

    def fitted(self) -> dict[str, GroupLadder]:
        return {ladder.group: ladder for ladder in self.ladders if ladder.fit is not None}

    def failed(self) -> list[GroupLadder]:
        return [ladder for ladder in self.ladders if ladder.fit is None]

    def slope_tests(self) -> pd.DataFrame:
        """Every pair of fitted groups: the difference of their ``b`` with its 95% CI, p and
        Holm's p across the pairs."""
        fitted = list(self.fitted().values())
        rows = []
        for i, first in enumerate(fitted):
            for second in fitted[i + 1:]:
                assert first.fit is not None and second.fit is not None
                test = slope_difference(first.fit, second.fit)
                rows.append({"first": first.group, "second": second.group, "difference": test.difference,
                             "ci95_low": test.ci95[0], "ci95_high": test.ci95[1], "t": test.t, "df": test.df,
                             "p": test.p})
        frame = pd.DataFrame(rows, columns=["first", "second", "difference", "ci95_low", "ci95_high", "t", "df", "p"])
        frame["p_holm"] = holm(frame["p"].tolist()) if len(frame) else []
        return frame


def scaling_group_column(table: pd.DataFrame) -> str | None:
    """The factor a scaling study compares (layout or rule): a sampled parameter other than
    ``scale`` and ``seed``; None when the run has no ``scale`` parameter."""
    if "param.scale" not in table:
        return None
    others = [c for c in table.columns if c.startswith("param.") and c not in ("param.scale", "param.seed")]
    return others[0] if others else "layout"


def scaling_fits(table: pd.DataFrame) -> ScalingFits | None:
    """Each group's ladder of full-fidelity trials, fitted; None for a run without ``scale``
    or without a complete trial."""
    column = scaling_group_column(table)
    if column is None:
        return None
    rows = ranked(table).dropna(subset=["val_acc", "flops"])
    if rows.empty:
        return None
    ladders = []
    for group, part in rows.groupby(rows[column].map(value_label), sort=False):
        flops = tuple(part["flops"].astype(float))
        error = tuple(1 - part["val_acc"].astype(float))
        correct = perimage.matrix(part["val_correct"]) if "val_correct" in part else None
        sizes = part["val_images"].dropna() if "val_images" in part else pd.Series(dtype=float)
        n_eval = int(sizes.iloc[0]) if len(sizes) == len(part) else None
        try:
            ladders.append(GroupLadder(str(group), flops, error, fit_log_linear(flops, error, n_eval, correct)))
        except ValueError as exc:
            ladders.append(GroupLadder(str(group), flops, error, None, first_line(exc)))
    return ScalingFits(column, tuple(ladders))
