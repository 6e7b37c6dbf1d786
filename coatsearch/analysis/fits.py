"""Scaling fits: validation error against FLOPs, per group of a scaling study.

- `fit_power_law`: ``error = a * (FLOPs / F0) ** -b + c`` fitted to a scaling ladder, with
  95% CIs of ``b`` and ``c`` from a bootstrap over the trials at each budget;
- `crossing`: where two fitted curves cross;
- `scaling_fits`: the ladder of every group of a table, fitted once, for the report's
  figure and the study README's table alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from coatsearch.results import ranked
from coatsearch.units import value_label


@dataclass(frozen=True)
class PowerLaw:
    """``error = a * (flops / f0) ** -b + c``; CIs are bootstrap 2.5-97.5 percentiles."""

    a: float
    b: float
    c: float
    f0: float
    b_ci: tuple[float, float]
    c_ci: tuple[float, float]
    n: int

    def __call__(self, flops: np.ndarray | float) -> np.ndarray | float:
        return self.a * (np.asarray(flops, float) / self.f0) ** -self.b + self.c


def _fit(flops: np.ndarray, error: np.ndarray, f0: float) -> tuple[float, float, float]:
    x = flops / f0

    def model(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a * x**-b + c

    guess = (max(float(error.max() - error.min()), 1e-3), 0.5, float(max(error.min() * 0.5, 0.0)))
    params, _ = optimize.curve_fit(model, x, error, p0=guess, bounds=([0, 0, 0], [10, 5, 1]), maxfev=20000)
    return float(params[0]), float(params[1]), float(params[2])


def fit_power_law(flops: Sequence[float], error: Sequence[float], boot: int = 500, seed: int = 0) -> PowerLaw:
    """Fit the ladder; the bootstrap resamples the trials within each distinct budget."""
    f, e = np.asarray(flops, float), np.asarray(error, float)
    if len(np.unique(np.round(np.log(f), 1))) < 3:
        raise ValueError("fit_power_law: needs at least three budgets")
    f0 = float(np.exp(np.log(f).mean()))
    a, b, c = _fit(f, e, f0)
    rng = np.random.default_rng(seed)
    levels = np.round(np.log(f), 1)
    groups = [np.flatnonzero(levels == level) for level in np.unique(levels)]
    bs, cs = [], []
    for _ in range(boot):
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        try:
            _, b_i, c_i = _fit(f[pick], e[pick], f0)
        except (RuntimeError, ValueError):
            continue
        bs.append(b_i)
        cs.append(c_i)
    b_ci = (float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))) if bs else (math.nan, math.nan)
    c_ci = (float(np.percentile(cs, 2.5)), float(np.percentile(cs, 97.5))) if cs else (math.nan, math.nan)
    return PowerLaw(a, b, c, f0, b_ci, c_ci, len(f))


def crossing(first: PowerLaw, second: PowerLaw, low: float, high: float) -> float | None:
    """FLOPs in ``[low, high]`` where the two curves cross (the first sign change on a log
    grid, refined), or None when one stays below the other."""
    grid = np.exp(np.linspace(math.log(low), math.log(high), 400))
    gap = np.asarray(first(grid)) - np.asarray(second(grid))
    signs = np.sign(gap)
    changes = np.flatnonzero(signs[:-1] * signs[1:] < 0)
    if not len(changes):
        return None
    i = int(changes[0])

    def difference(log_f: float) -> float:
        return float(first(math.exp(log_f)) - second(math.exp(log_f)))

    return math.exp(optimize.brentq(difference, math.log(grid[i]), math.log(grid[i + 1])))


@dataclass(frozen=True)
class GroupLadder:
    """One group's trials on a scaling ladder and its fit (None when it failed: fewer than
    three budgets, or no convergence; ``failure`` says which)."""

    group: str
    flops: tuple[float, ...]
    error: tuple[float, ...]
    fit: PowerLaw | None
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


def scaling_group_column(table: pd.DataFrame) -> str | None:
    """The factor a scaling study compares (layout or rule): a sampled parameter other than
    ``scale`` and ``seed``; None when the run has no ``scale`` parameter."""
    if "param.scale" not in table:
        return None
    others = [c for c in table.columns if c.startswith("param.") and c not in ("param.scale", "param.seed")]
    return others[0] if others else "layout"


def scaling_fits(table: pd.DataFrame, boot: int = 500) -> ScalingFits | None:
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
        try:
            ladders.append(GroupLadder(str(group), flops, error, fit_power_law(flops, error, boot=boot)))
        except (ValueError, RuntimeError) as exc:
            ladders.append(GroupLadder(str(group), flops, error, None, str(exc).splitlines()[0]))
    return ScalingFits(column, tuple(ladders))
