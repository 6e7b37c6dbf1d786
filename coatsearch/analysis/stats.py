"""The statistics study verdicts are built on, on top of `scipy`.

- `welch`: Welch's t-test of two groups, with its degrees of freedom, p and a 95% CI of
  the difference of means.
- `holm`: Holm's step-down correction of a family of p-values.
- `mean_ci`: a 95% CI of a mean accuracy that combines the spread over seeds with the
  evaluation set's own binomial error (an accuracy measured on 1,000 images is uncertain
  by about 1 pp even with one seed).

Every test a study README or a report states comes from these functions (the power-law
fits are in `coatsearch.analysis.fits`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Welch:
    difference: float  # mean(a) - mean(b)
    t: float
    df: float
    p: float
    ci95: tuple[float, float]


def welch(a: Sequence[float], b: Sequence[float], n_eval: tuple[int, int] | None = None) -> Welch:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)`` (two-sided).

    ``n_eval``: the evaluation sets' sizes when ``a`` and ``b`` are accuracies; each mean's
    variance then gains the binomial part of `mean_ci` (the seeds' spread alone misses
    the evaluation set's own sampling error), and the degrees of freedom are
    Welch-Satterthwaite's over those combined variances.
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("welch: each group needs at least two values")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if n_eval is not None:
        va += _binomial_var(float(x.mean()), n_eval[0], len(x))
        vb += _binomial_var(float(y.mean()), n_eval[1], len(y))
    diff = float(x.mean() - y.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return Welch(diff, math.inf if diff else 0.0, float(len(x) + len(y) - 2), 0.0 if diff else 1.0, (diff, diff))
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(0.975, df) * se)
    return Welch(diff, float(t), float(df), p, (diff - half, diff + half))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _binomial_var(mean: float, n_eval: int, seeds: int) -> float:
    """The variance an evaluation set of ``n_eval`` images adds to a mean over ``seeds``."""
    return mean * (1 - mean) / (n_eval * seeds)


def mean_ci(accuracies: Sequence[float], n_eval: int | None = None) -> tuple[float, float, float]:
    """``(mean, low, high)``: a 95% CI of a mean accuracy over seeds, widened by the binomial
    error of an evaluation set of ``n_eval`` images (when given). With one seed only the
    binomial part remains."""
    x = np.asarray(accuracies, float)
    mean = float(x.mean())
    seed_var = x.var(ddof=1) / len(x) if len(x) > 1 else 0.0
    binomial_var = _binomial_var(mean, n_eval, len(x)) if n_eval else 0.0
    df = max(len(x) - 1, 1)
    quantile = float(sps.t.ppf(0.975, df)) if len(x) > 1 else 1.959964
    half = quantile * math.sqrt(seed_var + binomial_var)
    return mean, mean - half, mean + half
