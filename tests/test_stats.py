"""coatsearch.analysis.stats and .fits on fixed data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from coatsearch.analysis.fits import crossing, fit_log_linear, slope_difference
from coatsearch.analysis.stats import (
    Part,
    binomial_bound,
    detectable,
    holm,
    mcnemar,
    mean_ci,
    paired,
    satterthwaite,
    trend,
    welch,
)


def test_welch_by_hand():
    # means 2 and 5, variances 1 and 1, n = 3 each: se = sqrt(2/3), t = -3/se, df = 4
    result = welch([1, 2, 3], [4, 5, 6])
    assert result.difference == -3.0 and result.se == pytest.approx(math.sqrt(2 / 3))
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


def test_satterthwaite_gives_each_part_its_own_degrees_of_freedom():
    # 0.01 on 2 df and 0.03 on 999 df: (0.04)^2 / (0.01^2/2 + 0.03^2/999)
    variance, df = satterthwaite([Part(0.01, 2), Part(0.03, 999)])
    assert variance == pytest.approx(0.04)
    assert df == pytest.approx(0.0016 / (0.00005 + 0.0009 / 999))
    assert satterthwaite([Part(0.01, math.inf)]) == (0.01, math.inf)  # known exactly: a normal quantile
    assert satterthwaite([Part(0.0, 2), Part(0.01, math.inf)])[1] == math.inf


def test_welch_with_evaluation_sets_adds_a_binomial_bound_with_its_own_degrees_of_freedom():
    a, b = [0.80, 0.82, 0.81], [0.78, 0.79, 0.77]
    plain, widened = welch(a, b), welch(a, b, n_eval=(1000, 2000))
    # the seeds share one evaluation set: its bound p(1-p)/n is not divided by the seeds
    seeds_a, seeds_b, bin_a, bin_b = 0.0001 / 3, 0.0001 / 3, 0.81 * 0.19 / 1000, 0.78 * 0.22 / 2000
    total = seeds_a + seeds_b + bin_a + bin_b
    assert widened.difference == pytest.approx(plain.difference)
    assert widened.t == pytest.approx(0.03 / math.sqrt(total))
    assert widened.df == pytest.approx(total**2 / (seeds_a**2 / 2 + seeds_b**2 / 2 + bin_a**2 / 999 + bin_b**2 / 1999))
    # the binomial part, estimated from thousands of images, is not held to the seeds' 4 df
    assert widened.df > 4 * plain.df
    assert widened.p > plain.p and widened.ci95[1] - widened.ci95[0] > plain.ci95[1] - plain.ci95[0]
    # identical seeds: the binomial parts alone, a finite test instead of a certain one, on ~2,000 df
    same = welch([0.8, 0.8], [0.79, 0.79], n_eval=(1000, 1000))
    v1, v2 = 0.8 * 0.2 / 1000, 0.79 * 0.21 / 1000
    assert 0 < same.p < 1 and same.df == pytest.approx((v1 + v2) ** 2 / ((v1**2 + v2**2) / 999))
    assert same.test == "Welch, seeds + binomial bound" and plain.test == "Welch, seeds"


def _wilson_by_hand(p: float, variance: float, df: float) -> tuple[float, float]:
    z, n = sps.t.ppf(0.975, df), p * (1 - p) / variance
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def test_mean_ci_adds_the_evaluation_sets_error_on_its_own_degrees_of_freedom():
    mean, low, high = mean_ci([0.9], n_eval=1000)  # one seed: binomial only, .09/1000 on 999 df
    assert mean == 0.9 and (low, high) == pytest.approx(_wilson_by_hand(0.9, 0.09 / 1000, 999))
    # far from 0 and 1 Wilson's interval is the t interval, nearly
    assert high - low == pytest.approx(2 * sps.t.ppf(0.975, 999) * math.sqrt(0.09 / 1000), rel=0.01)
    seeds_only = mean_ci([0.85, 0.86, 0.84])
    assert seeds_only[1:] == pytest.approx(_wilson_by_hand(0.85, 0.0001 / 3, 2))
    both = mean_ci([0.85, 0.86, 0.84], n_eval=1000)
    seeds, binomial = 0.0001 / 3, binomial_bound(0.85, 1000).variance
    df = (seeds + binomial) ** 2 / (seeds**2 / 2 + binomial**2 / 999)
    assert both[1:] == pytest.approx(_wilson_by_hand(0.85, seeds + binomial, df))
    # the seeds' 2 df held the whole interval to t(2) = 4.30 before; now about 2.1
    assert both[2] - both[1] < 2 * 4.302653 * math.sqrt(seeds + binomial) / 2
    # per-image records replace the bound: seeds that agree on every image leave the images' own spread
    records = np.array([[1, 1, 0, 1], [1, 1, 0, 1]], float)
    m, lo, hi = mean_ci([0.75, 0.75], correct=records)
    assert (lo, hi) == pytest.approx(_wilson_by_hand(0.75, 0.25 / 4, 3))


def test_an_accuracy_interval_stays_within_0_and_100_percent():
    """Three seeds on 108 images that disagree widely, and a trial that got every image
    right: the t interval gave 22-112% and [100%, 100%]."""
    mean, low, high = mean_ci([0.45, 0.95, 0.627], n_eval=108)
    assert 0 <= low < mean < high <= 1 and high - low > 0.5
    perfect = mean_ci([1.0], n_eval=108)
    z = sps.norm.ppf(0.975)
    assert perfect[2] == 1.0 and perfect[1] == pytest.approx(108 / (108 + z**2))
    records = np.ones((2, 108))
    assert mean_ci([1.0, 1.0], correct=records)[1] == pytest.approx(108 / (108 + sps.norm.ppf(0.975) ** 2), rel=1e-3)


def test_paired_by_hand():
    a = np.array([[1, 1, 1, 1], [0, 0, 0, 1]])  # accuracies 1.00, 0.25
    b = np.array([[1, 0, 1, 0], [1, 0, 1, 0]])  # accuracies 0.50, 0.50: seeds identical
    result = paired(a, b)
    # images: d = (-.5, .5, -.5, 1), mean .125, var 1.6875/3, over 4 images: 0.140625 on 3 df
    # a's seeds: var(1, .25)/2 = 0.140625 on 1 df, less its seeds-by-images interaction:
    #   residuals +-.125 (six cells) and +-.375 (two), SS .375 on 3 df, MS .125, over n k = 8
    # b's seeds agree everywhere: no seeds' part
    images, spread, within = 0.140625, 0.140625, 0.125 / 8
    total = images + spread - within
    df = total**2 / (spread**2 / 1 + within**2 / 3 + images**2 / 3)
    assert result.difference == pytest.approx(0.125) and result.se == pytest.approx(math.sqrt(total))
    assert result.df == pytest.approx(df)
    assert result.p == pytest.approx(2 * sps.t.sf(0.125 / math.sqrt(total), df))
    # seeds whose spread is no more than their image-by-image disagreement add nothing
    c = np.array([[1, 1, 0, 1], [1, 0, 0, 1]])  # spread .03125/2; interaction MS .125, over 8
    d = np.array([[1, 0, 0, 0], [1, 0, 1, 0]])
    only_images = paired(c, d)  # d_i = (0, .5, -.5, 1): var 1.25/3, over 4
    assert only_images.se == pytest.approx(math.sqrt(1.25 / 3 / 4)) and only_images.df == pytest.approx(3)
    with pytest.raises(ValueError, match="one each: mcnemar"):
        paired(a[:1], b)


def test_pairing_by_image_is_more_precise_than_independent_binomials():
    # two configurations that agree on 95% of 1,000 shared images, 3 seeds each
    rng = np.random.default_rng(0)
    shared = rng.random(1000) < 0.85
    a = np.stack([np.where(rng.random(1000) < 0.03, ~shared, shared) for _ in range(3)]).astype(float)
    b = np.stack([np.where(rng.random(1000) < 0.05, ~shared, shared) for _ in range(3)]).astype(float)
    by_image = paired(a, b)
    unpaired = welch(a.mean(axis=1), b.mean(axis=1), n_eval=(1000, 1000))
    assert by_image.difference == pytest.approx(unpaired.difference)
    assert by_image.se < 0.7 * unpaired.se


def test_mcnemar_exact_by_hand():
    # 10 images only the first gets right, 2 only the second, 88 both or neither
    first = np.array([True] * 10 + [False] * 2 + [True] * 80 + [False] * 8)
    second = np.array([False] * 10 + [True] * 2 + [True] * 80 + [False] * 8)
    result = mcnemar(first, second)
    # P(X <= 2 | Binomial(12, 1/2)) = (1 + 12 + 66) / 4096, two-sided doubles it
    assert result.p == pytest.approx(2 * 79 / 4096)
    assert result.difference == pytest.approx(0.08)
    assert result.se == pytest.approx(math.sqrt(12 - 64 / 100) / 100)
    assert mcnemar(first, first).p == 1.0
    with pytest.raises(ValueError):
        mcnemar(first, second[:-1])


def test_trend_by_hand():
    x, y = [0, 0, 1, 1, 2, 2], [0.80, 0.82, 0.84, 0.86, 0.88, 0.90]
    result = trend(x, y)
    # slope 0.04 per step; residuals +-0.01, SSR 6e-4 on 4 df, Sxx = 4
    se = math.sqrt(6e-4 / 4 / 4)
    assert result.difference == pytest.approx(0.04) and result.se == pytest.approx(se) and result.df == 4
    assert result.p == pytest.approx(2 * sps.t.sf(0.04 / se, 4))
    # the images' part: per-image records add the variance over images of sum w_j c_ji,
    # and the residual part loses the trials' image-by-image disagreement (the interaction
    # pooled over the two trials at each value), here more than all of it
    records = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], float)
    with_images = trend(x, y, correct=records)
    w = (np.array(x) - 1) / 4
    images = (w @ records).var(ddof=1) / 4
    assert with_images.se == pytest.approx(math.sqrt(images)) and with_images.df == pytest.approx(3)
    rng = np.random.default_rng(4)  # seeds that differ as whole networks: the residual part stays, net
    quality = np.repeat([0.6, 0.9, 0.65, 0.95, 0.7, 1.0], 1)[:, None]
    wide = (rng.random((6, 400)) < quality).astype(float)
    y_wide = wide.mean(axis=1)
    net = trend(x, y_wide, correct=wide)
    slope = w @ y_wide
    residual = ((y_wide - y_wide.mean() - slope * (np.array(x) - 1)) ** 2).sum() / 4 / 4
    pooled = 0.0
    for rows in (wide[0:2], wide[2:4], wide[4:6]):
        cells = rows - rows.mean(axis=1, keepdims=True) - rows.mean(axis=0, keepdims=True) + rows.mean()
        pooled += (cells**2).sum()
    within = pooled / (3 * 399) / (400 * 4)
    assert residual > within
    assert net.se == pytest.approx(math.sqrt(residual - within + (w @ wide).var(ddof=1) / 400))
    bounded = trend(x, y, n_eval=1000)
    assert bounded.se > result.se and bounded.test.endswith("binomial bound")
    with pytest.raises(ValueError):
        trend([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])  # two values: a pair, not a trend


def test_detectable_difference_by_hand():
    # a normal test at 5% with 80% power: 1.959964 + 0.841621 standard errors
    assert detectable(1.0, math.inf, 0.05) == pytest.approx(2.801585, abs=1e-5)
    # a stricter level needs a larger difference
    assert detectable(0.01, 30, 0.05 / 75) > detectable(0.01, 30, 0.05)


@pytest.mark.parametrize("df", [2, 4, 6])
def test_detectable_difference_has_its_power_at_small_df(df):
    """Simulated t tests of a true difference of `detectable` reject 80% of the time; the
    shortcut (t(1 - a/2) + t(0.8)) x se, used before, falls short at small df."""
    rng = np.random.default_rng(0)
    se, alpha = 0.01, 0.05 / 75  # the strictest Holm step of a 75-row family
    critical = float(sps.t.ppf(1 - alpha / 2, df))

    def power(difference: float) -> float:
        estimate = difference + se * rng.standard_normal(400_000)
        estimated_se = se * np.sqrt(rng.chisquare(df, 400_000) / df)
        return float((np.abs(estimate / estimated_se) > critical).mean())

    assert power(detectable(se, df, alpha)) == pytest.approx(0.8, abs=0.004)
    shortcut = (critical + float(sps.t.ppf(0.8, df))) * se
    assert power(shortcut) < 0.77


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_log_linear_fit_recovers_a_known_exponent_with_an_exact_interval():
    rng = np.random.default_rng(1)
    flops = np.repeat([5e6, 1e7, 2e7, 4e7], 3)
    error = 0.30 * (flops / 1e7) ** -0.25 * np.exp(rng.normal(0, 0.02, len(flops)))
    fit = fit_log_linear(flops, error)
    assert fit.b == pytest.approx(0.25, abs=0.03) and fit.b_ci[0] < 0.25 < fit.b_ci[1]
    assert fit.df == 10 and fit.budgets == 4 and fit.per_doubling == pytest.approx(2**-fit.b - 1)
    regression = sps.linregress(np.log(flops), np.log(error))
    half = sps.t.ppf(0.975, 10) * regression.stderr
    assert fit.b_ci == pytest.approx((-regression.slope - half, -regression.slope + half))
    assert fit(fit.f0) == pytest.approx(fit.a)
    assert fit.lack_of_fit_p is not None and fit.lack_of_fit_p > 0.05  # a straight line, as drawn


def test_a_bending_ladder_fails_the_lack_of_fit_test():
    flops = np.repeat([5e6, 1e7, 2e7, 4e7], 3)
    error = 0.3 * (flops / 1e7) ** -0.8 + 0.1 + np.tile([-0.001, 0.0, 0.001], 4)  # saturates
    assert fit_log_linear(flops, error).lack_of_fit_p < 0.001


@pytest.mark.parametrize("flops,error,why", [
    ([1e6, 1e6, 1e6], [0.3, 0.3, 0.2], "two budgets"),
    ([1e6, 2e6], [0.3, 0.2], "three trials"),
    ([1e6, 2e6, 4e6], [0.3, 0.2, 0.0], "no logarithm"),
])
def test_a_ladder_that_cannot_be_fitted_says_why(flops, error, why):
    with pytest.raises(ValueError, match=why):
        fit_log_linear(flops, error)


def test_slopes_compare_and_lines_cross_where_they_are_equal():
    flops = np.repeat([5e6, 1e7, 2e7, 4e7], 3)
    wiggle = np.exp(np.tile([-0.01, 0.0, 0.01], 4))
    steep = fit_log_linear(flops, 0.30 * (flops / 2e7) ** -0.6 * wiggle)
    flat = fit_log_linear(flops, 0.20 * (flops / 2e7) ** -0.2 * wiggle)
    # 0.30 x^-0.6 = 0.20 x^-0.2 at x = 1.5^(1/0.4), x = F / 2e7
    exact = 2e7 * 1.5 ** (1 / 0.4)
    assert crossing(steep, flat, 5e6, 8e7) == pytest.approx(exact, rel=1e-3)
    assert crossing(steep, flat, 5e6, 2e7) is None and crossing(steep, steep, 5e6, 8e7) is None
    test = slope_difference(steep, flat)
    assert test.difference == pytest.approx(0.4, abs=1e-3) and test.p < 0.001
    assert test.df == pytest.approx(20, rel=1e-6)  # equal variances, 10 df each


def test_paired_holds_its_level_when_seeds_differ_as_whole_networks():
    """Equal configurations, three seeds each, each seed a better or worse network overall:
    a test of the images alone would call most such pairs different; the paired test,
    with its seeds' part, keeps to about its 5%."""
    rng = np.random.default_rng(7)
    rejected, images_only = 0, 0
    sims = 300
    for _ in range(sims):
        difficulty = rng.normal(0, 2, 300)

        def configuration(difficulty: np.ndarray) -> np.ndarray:
            quality = rng.normal(1.8, 0.3, (3, 1))  # a seed's overall quality
            noise = rng.normal(0, 0.7, (3, 300))  # and its image-by-image luck
            return (rng.random((3, 300)) < 1 / (1 + np.exp(-(difficulty + quality + noise)))).astype(float)

        a, b = configuration(difficulty), configuration(difficulty)
        rejected += paired(a, b).p < 0.05
        d = a.mean(axis=0) - b.mean(axis=0)
        images_only += 2 * sps.t.sf(abs(d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))), len(d) - 1) < 0.05
    assert rejected / sims <= 0.08
    assert images_only / sims > 0.2


def test_a_scaling_slope_counts_the_evaluation_images_like_every_other_slope():
    """Without per-image records, the interval of b adds each trial's binomial error on the
    log-error scale (bounded as `trend` bounds it) to the residual spread: one slope
    analysis for the fits and the comparisons."""
    flops, error, n = [1e6, 2e6, 4e6, 8e6, 8e6], [0.30, 0.27, 0.25, 0.22, 0.23], 500
    alone, with_images = fit_log_linear(flops, error), fit_log_linear(flops, error, n_eval=n)
    x = np.log(np.asarray(flops) / np.exp(np.log(flops).mean()))
    y, e = np.log(error), np.asarray(error)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    residual = ((y - y.mean() - (w @ y) * (x - x.mean())) ** 2).sum() / 3 / ((x - x.mean()) ** 2).sum()
    spread = np.sqrt((1 - e) * e / n) / e
    bound = (w[w > 0] @ spread[w > 0]) ** 2 + (w[w < 0] @ spread[w < 0]) ** 2
    assert alone.se_b**2 == pytest.approx(residual) and alone.df == 3
    assert with_images.b == pytest.approx(alone.b)
    assert with_images.se_b**2 == pytest.approx(residual + bound)
    assert with_images.b_ci[1] - with_images.b_ci[0] > alone.b_ci[1] - alone.b_ci[0]
