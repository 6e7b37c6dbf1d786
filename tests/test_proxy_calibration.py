"""The calibration statistics (`coatsearch.proxies.calibration`): τ and ρ with bootstrap
intervals that hold the point value and shrink with more networks; the rank average."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coatsearch.proxies.calibration import correlation, rank_average


def test_a_perfect_ranking_and_its_reverse():
    acc = np.linspace(0.5, 0.9, 20)
    up, down = correlation(acc * 3 + 1, acc, resamples=200), correlation(-acc, acc, resamples=200)
    assert up.tau == up.rho == 1 and up.tau_lo == pytest.approx(1)
    assert down.tau == down.rho == -1


def test_the_interval_holds_the_estimate_and_narrows_with_more_networks():
    rng = np.random.default_rng(1)
    widths = []
    for n in (15, 120):
        acc = rng.normal(size=n)
        c = correlation(acc + rng.normal(size=n), acc, resamples=500)
        assert c.tau_lo <= c.tau <= c.tau_hi and c.rho_lo <= c.rho <= c.rho_hi and c.n == n
        widths.append(c.tau_hi - c.tau_lo)
    assert widths[1] < widths[0] / 1.8


def test_non_finite_scores_are_left_out_and_too_few_give_nan():
    c = correlation([1.0, float("-inf"), 2.0, 3.0, float("nan")], [0.1, 0.2, 0.3, 0.4, 0.5], resamples=100)
    assert c.n == 3 and c.tau == 1
    assert math.isnan(correlation([1.0, 2.0], [1.0, 2.0]).tau)


def test_the_rank_average_ignores_each_proxys_scale():
    combined = rank_average([[1.0, 2.0, 3.0], [1e9, 1e6, 1e3]])
    assert list(combined) == [2.0, 2.0, 2.0]


def test_the_point_estimates_are_scipys_ties_included():
    from scipy import stats

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)  # many ties in x
    c = correlation(x, y, resamples=50)
    assert c.tau == pytest.approx(stats.kendalltau(x, y).statistic)
    assert c.rho == pytest.approx(stats.spearmanr(x, y).statistic)
