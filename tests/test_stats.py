"""coatsearch.analysis.stats and .fits on fixed data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coatsearch.analysis.fits import crossing, fit_power_law
from coatsearch.analysis.stats import holm, mean_ci, welch


def test_welch_by_hand():
    # means 2 and 5, variances 1 and 1, n = 3 each: se = sqrt(2/3), t = -3/se, df = 4
    result = welch([1, 2, 3], [4, 5, 6])
    assert result.difference == -3.0
    assert result.t == pytest.approx(-3 / math.sqrt(2 / 3))
    assert result.df == pytest.approx(4.0)
    assert result.p == pytest.approx(0.021312, abs=1e-6)  # two-sided t(4) tail beyond 3.674
    half = 2.776445 * math.sqrt(2 / 3)  # t(4) 97.5% quantile
    assert result.ci95 == pytest.approx((-3 - half, -3 + half), abs=1e-5)


def test_welch_unequal_sizes_uses_welch_satterthwaite_df():
    result = welch([0.80, 0.82, 0.81, 0.83], [0.78, 0.79, 0.80])
    va, vb = np.var([0.80, 0.82, 0.81, 0.83], ddof=1) / 4, np.var([0.78, 0.79, 0.80], ddof=1) / 3
    assert result.df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 2))
    assert result.p == pytest.approx(0.034648, abs=1e-5)
    with pytest.raises(ValueError):
        welch([1.0], [2.0, 3.0])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_mean_ci_adds_the_binomial_error_of_the_evaluation_set():
    mean, low, high = mean_ci([0.9], n_eval=1000)  # one seed: binomial only, sqrt(.09/1000)
    assert mean == 0.9 and high - mean == pytest.approx(1.959964 * math.sqrt(0.09 / 1000))
    seeds_only = mean_ci([0.85, 0.86, 0.84])
    both = mean_ci([0.85, 0.86, 0.84], n_eval=1000)
    assert seeds_only[2] - seeds_only[0] == pytest.approx(4.302653 * 0.01 / math.sqrt(3))
    assert both[2] - both[0] > seeds_only[2] - seeds_only[0]


def test_power_law_fit_recovers_known_curves_and_their_crossing():
    flops = np.repeat([5e6, 1e7, 2e7, 4e7, 8e7], 3)
    steep = 0.30 * (flops / 2e7) ** -0.6 + 0.05
    flat = 0.35 * (flops / 2e7) ** -0.2 + 0.01
    fit_steep, fit_flat = fit_power_law(flops, steep, boot=50), fit_power_law(flops, flat, boot=50)
    assert fit_steep.b == pytest.approx(0.6, abs=0.01) and fit_steep.c == pytest.approx(0.05, abs=0.005)
    assert fit_steep.b_ci[0] <= fit_steep.b <= fit_steep.b_ci[1]
    # the curves are equal where 0.30 x^-0.6 + 0.05 = 0.35 x^-0.2 + 0.01, solved numerically
    grid = np.exp(np.linspace(np.log(5e6), np.log(8e7), 100000))
    exact = grid[np.argmin(np.abs(0.30 * (grid / 2e7) ** -0.6 + 0.05 - 0.35 * (grid / 2e7) ** -0.2 - 0.01))]
    assert crossing(fit_steep, fit_flat, 5e6, 8e7) == pytest.approx(exact, rel=0.02)
    assert crossing(fit_steep, fit_steep, 5e6, 8e7) is None
    with pytest.raises(ValueError, match="three budgets"):
        fit_power_law([1e6, 1e6, 2e6], [0.3, 0.3, 0.2])


def test_welch_with_evaluation_sets_adds_their_binomial_variance():
    import math

    a, b = [0.80, 0.82, 0.81], [0.78, 0.79, 0.77]
    plain, widened = welch(a, b), welch(a, b, n_eval=(1000, 2000))
    va = 0.0001 / 3 + 0.81 * 0.19 / (1000 * 3)
    vb = 0.0001 / 3 + 0.78 * 0.22 / (2000 * 3)
    assert widened.difference == pytest.approx(plain.difference)
    assert widened.t == pytest.approx(0.03 / math.sqrt(va + vb))
    assert widened.df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    assert widened.p > plain.p and widened.ci95[1] - widened.ci95[0] > plain.ci95[1] - plain.ci95[0]
    # identical seeds: the binomial part alone, a finite test instead of a certain one
    assert 0 < welch([0.8, 0.8], [0.79, 0.79], n_eval=(1000, 1000)).p < 1
