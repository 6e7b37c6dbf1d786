"""The statistics study verdicts are built on, on top of `scipy`.

An accuracy measured on an evaluation set has two sources of error: the training seed
(another seed trains another network) and the evaluation images (another 1,000 images
would score the same network differently). Every interval and test here adds the two as
variance components and gives the sum Welch-Satterthwaite degrees of freedom, each part
with its own: ``k - 1`` for a spread over ``k`` seeds, ``n - 1`` for a variance estimated
from ``n`` images. (Giving the evaluation set's part the seeds' 1 or 2 degrees of freedom
would take the t quantile of a handful of values for a variance known from a thousand,
and widen every interval several times over.)

- `welch`: two configurations without per-image records: the seeds' spread plus, for
  accuracies, the binomial bound ``p (1 - p) / n`` of each one's evaluation-set error.
- `paired`: two configurations whose trials all stored which images they got right
  (`coatsearch.perimage`), on the same images: the seeds' spread plus the variance over
  images of the per-image difference, which the shared images make far smaller.
- `mcnemar`: one trial each, image by image: McNemar's exact test.
- `trend`: an ordered factor: the least-squares slope of the metric on the value's place
  in the order, over every trial, with the same two parts.
- `curvature`: an ordered factor's quadratic contrast (a sweet spot, or a plateau).
- `mean_ci`: a 95% CI of one configuration's mean accuracy, within [0, 1].
- `detectable`: the smallest true difference a test resolves with 80% power.
- `holm`: Holm's step-down correction of a family of p-values; `simultaneous_ci` the
  intervals printed beside it.

Why the seeds share one bound rather than dividing it: every seed of a study is scored on
the same images, so their evaluation-set errors do not average out over seeds. The
variance over images of a mean of 0/1 scores is at most ``p (1 - p)`` (exact when the
seeds agree on every image), and two configurations' scores on shared images are
positively correlated, so without per-image records the bound is the honest (cautious)
choice; with them, `paired` measures the images' part instead of bounding it.

With per-image records the seeds and the images are crossed (every seed scores every
image), and the seeds' accuracies already vary by the images on which they disagree,
which the images' part counts too. So the seeds' part there is the two-way analysis of
variance's: the spread of the seeds' accuracies less the seeds-by-images interaction
mean square over ``n`` (`seed_parts`), kept only where it is positive; nothing is counted
twice, and the Welch-Satterthwaite degrees of freedom take the difference into account.

Every test a study README or a report states comes from these functions (`fits` too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

#: Names of the tests, as tables print them.
WELCH = "Welch, seeds"
WELCH_BINOMIAL = "Welch, seeds + binomial bound"
PAIRED = "paired by image, seeds + images"
MCNEMAR = "McNemar exact, one trial each"
TREND = "trend, least squares"
TREND_PAIRED = "trend, least squares, paired by image"
TREND_BINOMIAL = "trend, least squares + binomial bound"
CURVATURE = "curvature, least squares"
CURVATURE_PAIRED = "curvature, least squares, paired by image"
CURVATURE_BINOMIAL = "curvature, least squares + binomial bound"
#: Power the detectable difference is computed for.
POWER = 0.8


@dataclass(frozen=True)
class Test:
    """One estimate (a difference of means, or a slope per step) and its two-sided test.

    ``se`` combines the variance parts; ``df`` is their Welch-Satterthwaite degrees of
    freedom (infinite when only parts known exactly remain); ``t`` is the estimate over
    ``se`` (McNemar: the normal score of its discordant counts, with ``p`` exact)."""

    test: str
    difference: float
    se: float
    t: float
    df: float
    p: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Part:
    """One variance component of an estimate and the degrees of freedom it was estimated
    with (``math.inf``: known exactly)."""

    variance: float
    df: float


def satterthwaite(parts: Sequence[Part]) -> tuple[float, float]:
    """``(variance, df)`` of a sum of independent variance estimates: Welch-Satterthwaite,
    ``(sum v)^2 / sum(v^2 / df)`` (a part may be negative: a mean square taken out, as in
    `seed_parts`); a part with infinite df adds nothing to the denominator, and only such
    parts (or none with variance) give infinite df."""
    total = float(sum(p.variance for p in parts))
    denominator = sum(p.variance**2 / p.df for p in parts if p.variance != 0 and math.isfinite(p.df))
    return total, (total**2 / denominator if denominator > 0 else math.inf)


def t_test(name: str, difference: float, parts: Sequence[Part]) -> Test:
    """A t test of ``difference`` whose variance is the sum of ``parts`` (`satterthwaite`)."""
    variance, df = satterthwaite(parts)
    se = math.sqrt(variance)
    if se == 0:
        return Test(name, difference, 0.0, math.inf if difference else 0.0, df, 0.0 if difference else 1.0,
                    (difference, difference))
    t = difference / se
    half = float(sps.t.ppf(0.975, df)) * se
    return Test(name, difference, se, t, df, float(2 * sps.t.sf(abs(t), df)), (difference - half, difference + half))


def binomial_bound(accuracy: float, n_eval: int) -> Part:
    """The variance an evaluation set of ``n_eval`` images adds to an accuracy, or to a
    mean over seeds scored on that same set: at most ``p (1 - p) / n_eval`` (see the
    module), estimated from ``n_eval`` images."""
    return Part(accuracy * (1 - accuracy) / n_eval, max(n_eval - 1, 1))


def _seed_part(values: np.ndarray) -> Part:
    return Part(float(values.var(ddof=1)) / len(values), len(values) - 1)


def interaction(correct: np.ndarray) -> tuple[float, float]:
    """``(sum of squares, df)`` of the trials-by-images interaction of a trials x images
    table: what is left of each cell once its trial's and its image's means are taken out
    (``df = (k - 1)(n - 1)``)."""
    x = np.asarray(correct, float)
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float((residual**2).sum()), float((len(x) - 1) * (x.shape[1] - 1))


def seed_parts(correct: np.ndarray) -> list[Part]:
    """The seeds' part of a mean over ``k`` seeds scored on the same ``n`` images (trials x
    images), net of what the images' part already holds (see the module): the variance of
    the seeds' accuracies over ``k`` less the interaction mean square over ``n k``, as two
    parts for Welch-Satterthwaite; none when the difference is not positive."""
    x = np.asarray(correct, float)
    k, n = x.shape
    if k < 2:
        return []
    spread = float(x.mean(axis=1).var(ddof=1)) / k
    squares, df = interaction(x)
    within = squares / df / (n * k) if df > 0 else 0.0
    return [Part(spread, k - 1), Part(-within, df)] if spread > within else []


def welch(a: Sequence[float], b: Sequence[float], n_eval: tuple[int, int] | None = None) -> Test:
    """Welch's unequal-variance t-test of ``mean(a) - mean(b)`` (two-sided), at least two
    values each.

    ``n_eval``: the evaluation sets' sizes when ``a`` and ``b`` are accuracies without
    per-image records; each mean's variance then gains its `binomial_bound`.
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("welch: each group needs at least two values")
    parts = [_seed_part(x), _seed_part(y)]
    if n_eval is not None:
        parts += [binomial_bound(float(x.mean()), n_eval[0]), binomial_bound(float(y.mean()), n_eval[1])]
    return t_test(WELCH_BINOMIAL if n_eval is not None else WELCH, float(x.mean() - y.mean()), parts)


def paired(a: np.ndarray, b: np.ndarray) -> Test:
    """Two configurations scored on the same images: ``a`` and ``b`` are trials x images
    of 0/1 correctness (`coatsearch.perimage.matrix`), at least two trials each.

    The difference of mean accuracies equals the mean over images of ``d_i``, the
    per-image difference of the seeds' mean correctness. Its variance has two parts: the
    images' (``var(d_i) / n``, df ``n - 1``) and each configuration's seeds' (`seed_parts`:
    the spread of its seeds' accuracies beyond their image-by-image disagreement, which
    ``var(d_i)`` already holds). Images both configurations get right (or wrong) contribute
    nothing to ``var(d_i)``: that is the precision pairing buys, which independent
    binomials throw away. Chosen over a paired bootstrap because it is exact arithmetic,
    needs no random draws, and its parts say which source limits a study; in simulations
    of crossed seeds and images its 5% test rejects 2-5% of equal pairs (cautious where
    the seeds' part is near zero and clipped).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError("paired: the two configurations were scored on different numbers of images")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("paired: each configuration needs at least two trials (one each: mcnemar)")
    d = a.mean(axis=0) - b.mean(axis=0)
    parts = [*seed_parts(a), *seed_parts(b), Part(float(d.var(ddof=1)) / len(d), len(d) - 1)]
    return t_test(PAIRED, float(d.mean()), parts)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> Test:
    """McNemar's exact test of two networks scored on the same images: under equal
    accuracy, the images exactly one of them gets right split evenly between them, so the
    count ``n_ab`` (``a`` right, ``b`` wrong) out of the discordant ``n_ab + n_ba`` is
    Binomial(1/2). The difference is ``(n_ab - n_ba) / n``, its interval Wald's. With one
    trial each this tests the two trained networks, not their configurations: the seeds'
    variance is unknown."""
    x, y = np.asarray(a, bool), np.asarray(b, bool)
    if x.shape != y.shape or not len(x):
        raise ValueError("mcnemar: two equal, non-empty sets of per-image results are needed")
    n = len(x)
    n_ab, n_ba = int((x & ~y).sum()), int((~x & y).sum())
    difference = (n_ab - n_ba) / n
    discordant = n_ab + n_ba
    p = float(sps.binomtest(n_ab, discordant, 0.5).pvalue) if discordant else 1.0
    se = math.sqrt(max(discordant - (n_ab - n_ba) ** 2 / n, 0.0)) / n
    z = difference / se if se > 0 else (math.inf if difference else 0.0)
    half = float(sps.norm.ppf(0.975)) * se
    return Test(MCNEMAR, difference, se, z, math.inf, p, (difference - half, difference + half))


def trend(positions: Sequence[float], values: Sequence[float], correct: np.ndarray | None = None,
          n_eval: int | None = None) -> Test:
    """The least-squares slope of ``values`` (one per trial) on ``positions`` (each trial's
    place in the factor's order), over every trial: a trend test of an ordered factor that
    uses all of its values at once, where neighbouring pairs use two at a time.

    The slope is ``sum w_j y_j`` with ``w_j = (x_j - mean x) / Sxx``; its variance has the
    residual part (seeds and any curvature, df ``N - 2``) and, for accuracies, the
    images': with per-image records ``correct`` (trials x images) the variance over
    images of ``sum w_j c_ji``, df ``n - 1``, and the residual part less the trials'
    image-by-image disagreement it shares with it (the interaction mean square, pooled
    over the trials at each value, over ``n Sxx``; as in `seed_parts`); without them, a
    bound on the images' part from each trial's binomial error on ``n_eval`` images
    (positively correlated scores on shared images, the module's assumption:
    ``(sum_{w>0} w s)^2 + (sum_{w<0} |w| s)^2``, with ``s = sqrt(p (1 - p) / n_eval)``).
    """
    x = np.asarray(positions, float)
    _enough(x, values, "trend")
    return contrast(x, values, direction(x, 1), 1, correct, n_eval)


def direction(positions: Sequence[float] | np.ndarray, degree: int) -> np.ndarray:
    """The orthogonal polynomial of ``degree`` (1 or 2) over ``positions``: centred, the
    quadratic also free of the linear part, so each coefficient stands on its own."""
    centred = np.asarray(positions, float) - np.mean(positions)
    if degree == 1:
        return centred
    square = centred**2 - (centred**2).mean()
    sxx = float((centred**2).sum())
    return square - (float(square @ centred) / sxx) * centred if sxx > 0 else square


def _enough(x: np.ndarray, values: Sequence[float], name: str) -> None:  # trend, curvature
    if len(x) != len(values) or len(np.unique(x)) < 3 or len(x) < 4:
        raise ValueError(f"{name}: needs at least three distinct values and four trials")


def curvature(positions: Sequence[float], values: Sequence[float], correct: np.ndarray | None = None,
              n_eval: int | None = None) -> Test:
    """The quadratic term of a least-squares fit ``a + b c + q c^2`` of ``values`` on the
    centred positions ``c``, over every trial: negative where the middle of the order
    beats its ends (a sweet spot), positive where it falls behind them. For three equally
    spaced, equally filled values it is half the second difference of their means. Its
    variance has the parts `trend` describes, the residual's df ``N - 3``."""
    x = np.asarray(positions, float)
    _enough(x, values, "curvature")
    return contrast(x, values, direction(x, 2), 2, correct, n_eval)


def contrast(x: np.ndarray, values: Sequence[float], direction: np.ndarray, degree: int,
             correct: np.ndarray | None, n_eval: int | None,
             transform: tuple[np.ndarray, np.ndarray] | None = None) -> Test:
    """The least-squares coefficient of the orthogonal polynomial ``direction`` (of
    ``degree`` in ``x``) and its test, with the images' part as `trend` describes.

    ``transform``: where ``values`` are a function of the trials' accuracies (log error,
    `coatsearch.analysis.fits`), those accuracies and the function's derivative at each:
    the images' part is carried onto the values' scale by the delta method."""
    y = np.asarray(values, float)
    accuracy, scale = (y, np.ones(len(y))) if transform is None else (np.asarray(t, float) for t in transform)
    sxx = float((direction**2).sum())
    weights = direction / sxx
    estimate = float(weights @ y)
    fit = np.polynomial.polynomial.polyfit(x - x.mean(), y, degree)
    residuals = y - np.polynomial.polynomial.polyval(x - x.mean(), fit)
    residual_df = len(x) - degree - 1
    parts = [Part(float((residuals**2).sum()) / residual_df / sxx, residual_df)] if residual_df > 0 else []
    name = TREND if degree == 1 else CURVATURE
    if correct is not None:
        records = np.asarray(correct, float)
        per_image = (weights * scale) @ records
        pooled = [interaction(records[x == value]) for value in np.unique(x) if (x == value).sum() > 1]
        squares, df = sum(p[0] for p in pooled), sum(p[1] for p in pooled)
        within = squares / df / (records.shape[1] * sxx) * float((scale**2).mean()) if df > 0 else 0.0
        if parts and parts[0].variance > within:
            parts.append(Part(-within, df))
        else:
            parts = []
        parts.append(Part(float(per_image.var(ddof=1)) / len(per_image), len(per_image) - 1))
        name = TREND_PAIRED if degree == 1 else CURVATURE_PAIRED
    elif n_eval is not None:
        spread = np.abs(scale) * np.sqrt(np.clip(accuracy * (1 - accuracy), 0, None) / n_eval)
        bound = float((weights[weights > 0] @ spread[weights > 0]) ** 2 + (weights[weights < 0] @ spread[weights < 0]) ** 2)
        parts.append(Part(bound, max(n_eval - 1, 1)))
        name = TREND_BINOMIAL if degree == 1 else CURVATURE_BINOMIAL
    return t_test(name, estimate, parts)


def detectable(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The smallest true difference a two-sided t test at level ``alpha`` resolves with
    probability ``power``, from the noncentral t: the noncentrality ``lambda`` at which
    ``P(|T| > t(1 - alpha/2))`` reaches ``power`` for ``T ~ t'(df, lambda)``, times ``se``
    (normal at infinite df). The shortcut ``(t(1 - alpha/2) + t(power)) x se`` undershoots
    at small df (65-72% power below about 6 df). Callers pass the level the verdict needs
    (`coatsearch.analysis.comparisons`: the strictest step of Holm's correction over the
    family), so a difference this large is resolved whatever the other tests say."""
    if not math.isfinite(se) or se <= 0 or not df > 0:
        return math.nan if not math.isfinite(se) or not df > 0 else 0.0
    infinite = not math.isfinite(df) or df > 1e6
    critical = float(sps.norm.ppf(1 - alpha / 2) if infinite else sps.t.ppf(1 - alpha / 2, df))
    # |T| > c  <=>  |Z + lambda| > c s, with s^2 the variance estimate's chi-square over df:
    # the power is the normal tails averaged over s, on a grid of its quantiles (scipy's
    # noncentral t returns NaN far out at small df)
    scale = np.ones(1) if infinite else np.sqrt(sps.chi2.ppf((np.arange(4000) + 0.5) / 4000, df) / df)

    def shortfall(noncentrality: float) -> float:
        threshold = critical * scale
        reached = sps.norm.sf(threshold - noncentrality) + sps.norm.cdf(-threshold - noncentrality)
        return float(reached.mean()) - power

    high = critical + 4.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-9)) * se


def simultaneous_ci(test: Test, family: int, alpha: float = 0.05) -> tuple[float, float]:
    """The interval of ``test`` at level ``1 - alpha / family`` (Bonferroni's: it holds for
    all ``family`` rows at once with probability ``1 - alpha``), printed beside Holm's
    verdicts: a row Holm resolves at a later step can still touch zero."""
    if test.se == 0 or not math.isfinite(test.se):
        return test.ci95
    level = 1 - alpha / (2 * max(family, 1))
    half = float(sps.norm.ppf(level) if not math.isfinite(test.df) else sps.t.ppf(level, test.df)) * test.se
    return test.difference - half, test.difference + half


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


def mean_ci(accuracies: Sequence[float], n_eval: int | None = None,
            correct: np.ndarray | None = None) -> tuple[float, float, float]:
    """``(mean, low, high)``: a 95% CI of a mean accuracy over seeds, within [0, 1].

    Its variance is the seeds' part (df ``k - 1``) plus the evaluation images': measured
    from per-image records ``correct`` (trials x images: the variance over images of the
    seeds' mean correctness, the seeds' part then net of it, `seed_parts`) when given,
    else the `binomial_bound` of a set of ``n_eval`` images. The interval is Wilson's at
    the effective number of images that variance amounts to (``p (1 - p) / variance``, the
    design-effect form used for clustered samples), with the t quantile of its
    Welch-Satterthwaite df: near ``mean +- t se`` when the accuracy is far from 0 and 1,
    and never past them (a mean + t se interval gave 22-112% for 3 seeds on 108 images,
    and [100%, 100%] for a trial that got every image right). Where every trial got every
    image right (or wrong) the images counted bound it. With one seed and no images'
    part there is no interval (``low = high = mean``)."""
    x = np.asarray(accuracies, float)
    mean = float(x.mean())
    parts = [_seed_part(x)] if len(x) > 1 else []
    images = n_eval
    if correct is not None:
        records = np.atleast_2d(np.asarray(correct, float))
        per_image = records.mean(axis=0)
        parts = [*seed_parts(records), Part(float(per_image.var(ddof=1)) / len(per_image), len(per_image) - 1)]
        images = records.shape[1]
    elif n_eval:
        parts.append(binomial_bound(mean, n_eval))
    if not parts:
        return mean, mean, mean
    variance, df = satterthwaite(parts)
    low, high = wilson(mean, variance, df, images)
    return mean, low, high


def wilson(p: float, variance: float, df: float, images: int | None) -> tuple[float, float]:
    """Wilson's 95% interval of an accuracy ``p`` whose estimate has ``variance`` (df
    ``df``), at the effective count ``p (1 - p) / variance``; ``images`` stands in where
    ``p`` is 0 or 1 (no spread to measure: the normal quantile then, as Wilson's own).
    ``(p, p)`` when nothing bounds it."""
    z = float(sps.norm.ppf(0.975) if not math.isfinite(df) or variance == 0 else sps.t.ppf(0.975, df))
    if 0 < p < 1 and variance > 0:
        n = p * (1 - p) / variance
    elif p in (0.0, 1.0) and images:
        n = float(images)
    else:
        return p, p
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (low, 1.0) if p == 1.0 else (0.0, high) if p == 0.0 else (low, high)
