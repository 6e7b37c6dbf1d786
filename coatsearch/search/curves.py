"""Learning-curve extrapolation (after Domhan et al., 2015): predict a trial's final
metric from the epochs it has run, and stop it when that prediction is unlikely to beat
what the search already holds.

The prediction combines three groups: parametric families (`FAMILIES`: pow3, log-power,
exponential, Janoschek, log-linear) fitted by least squares (`scipy.optimize.curve_fit`)
to the epochs seen so far, each used where there are at least two more epochs than it has
parameters (so it can be checked on its own miss of the last epoch); the finished
trials' curves carried onto the trial's epochs (its distance below the ceiling, 1 for an
accuracy, as a multiple of theirs), which predicts from the first epoch on and carries the
shape a learning-rate schedule gives every curve; and a prior learned from the finished
trials (`coatsearch.search.curve_regression`): their final metric regressed on their
first epochs' metric, training and validation loss and size, which tells apart curves
that look alike so far but fit their training data at different speeds. Each group's
variance is the spread of its members and their errors (the prior's: its leave-one-out
error over the finished trials); the groups are weighted by its inverse, so families that
extrapolate badly on a schedule's curves count little. The metric is fitted signed, so
that higher is better.

A trial stops when the probability (normal, from that mean and standard deviation) that
its final value beats the threshold is below ``early_stopping.threshold``. The threshold
is the ``top``-th best final value among the finished full-fidelity trials that are at
least as good in every static objective (FLOPs, params): with one objective the
``top``-th best so far; with several, what the trial must beat to join the front.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coatsearch.search.curve_regression import regress
from coatsearch.search.rungs import CONTINUE, Course, Verdict

#: The smallest standard deviation a prediction is given (the metric's scale, a fraction).
SD_FLOOR = 0.01
#: How many of the latest epochs the learned prior may read (it reads as many as its own
#: leave-one-out error over the finished trials favours).
LAST = (1, 2, 3)
#: The prediction's groups of members.
GROUPS = ("families", "references", "regression")


def _pow3(x: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    return c - a * x ** (-alpha)


def _log_power(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a / (1 + (x / math.e ** b) ** c)


def _exp3(x: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
    return c - a * np.exp(-b * x)


def _janoschek(x: np.ndarray, alpha: float, beta: float, kappa: float, delta: float) -> np.ndarray:
    return alpha - (alpha - beta) * np.exp(-kappa * x ** delta)


def _log_linear(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return a + b * np.log(x)


#: name -> (function, initial guess)
FAMILIES: dict[str, tuple[Callable[..., np.ndarray], list[float]]] = {
    "pow3": (_pow3, [1.0, 0.5, 0.5]),
    "log_power": (_log_power, [1.0, 1.0, -1.0]),
    "exp3": (_exp3, [1.0, 0.5, 0.5]),
    "janoschek": (_janoschek, [1.0, 0.0, 0.5, 1.0]),
    "log_linear": (_log_linear, [0.5, 0.1]),
}


def _fit_family(name: str, x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float] | None:
    """The family's prediction at ``at`` and its residuals' RMS, or None where the fit fails
    or runs away (further from the last value than the curve's whole range, five times over,
    or a whole unit). Unbounded Levenberg-Marquardt: a bounded fit costs ten times as much
    and is judged the same way after."""
    from scipy.optimize import curve_fit

    function, guess = FAMILIES[name]
    if len(x) <= len(guess):
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            fitted, _ = curve_fit(function, x, y, p0=guess, maxfev=200)
            prediction = float(function(np.array([at], dtype=float), *fitted)[0])
            residual = float(np.sqrt(np.mean((function(x, *fitted) - y) ** 2)))
    except (RuntimeError, ValueError, TypeError):
        return None
    if not (math.isfinite(prediction) and math.isfinite(residual)):
        return None
    if abs(prediction - y[-1]) > max(1.0, 5 * float(y.max() - y.min())):
        return None
    return prediction, residual


@functools.lru_cache(maxsize=4096)
def _family_members(values: tuple[float, ...], max_epochs: int, families: tuple[str, ...]
                    ) -> tuple[tuple[float, float], ...]:
    """Each family's prediction and error for a curve's first epochs (a search meets the
    same curve again when it draws a network again, so the fits are kept). A family's error
    is its own miss of the last epoch from the ones before, grown with the distance it
    extrapolates, or its residual if larger."""
    y = np.asarray(values, dtype=float)
    x = np.arange(1, len(y) + 1, dtype=float)
    members = []
    for name in families:
        fit, back = _fit_family(name, x, y, max_epochs), _fit_family(name, x[:-1], y[:-1], x[-1])
        if fit is not None and back is not None:
            members.append((fit[0], max(fit[1], abs(back[0] - y[-1]) * (max_epochs - len(y)))))
    return tuple(members)


def _group(members: list[tuple[float, float]]) -> tuple[float, float] | None:
    """A group of members' mean prediction and the variance of that mean: their spread, as
    if from sqrt(n) independent members (they are correlated: the same epochs, near curves),
    plus their median residual's square. On fmnist32's curves this puts the 95% interval near the errors
    measured (`benchmarks/search_efficiency.py`)."""
    if not members:
        return None
    predictions = np.array([m[0] for m in members])
    spread = float(predictions.var()) / math.sqrt(len(members))
    return float(predictions.mean()), spread + float(np.median([m[1] for m in members])) ** 2


def _from_references(y: np.ndarray, references: Sequence[Sequence[float]], max_epochs: int,
                     ceiling: float | None) -> list[tuple[float, float]]:
    """Each full-length reference carried onto ``y``: with a ``ceiling`` (1 for an accuracy),
    its distance below the ceiling scaled by the mean ratio of the two curves' distances so
    far (log scale); without one, shifted by their mean difference. The nearest half count."""
    carried = []
    for ref in references:
        r = np.asarray(ref, dtype=float)
        if len(r) < max_epochs or len(r) < len(y):
            continue
        seen = r[:len(y)]
        distance = float(np.sqrt(np.mean((y - seen) ** 2)))
        if ceiling is not None and (ceiling - y > 0).all() and (ceiling - seen > 0).all():
            ratios = np.log((ceiling - y) / (ceiling - seen))
            prediction = ceiling - (ceiling - r[max_epochs - 1]) * math.exp(float(ratios.mean()))
            residual = float(np.std((ceiling - seen) * math.exp(float(ratios.mean())) - (ceiling - y)))
        else:
            offset = y - seen
            prediction, residual = float(r[max_epochs - 1] + offset.mean()), float(offset.std())
        carried.append((distance, prediction, residual))
    carried.sort(key=lambda m: m[0])
    return [(p, residual) for _, p, residual in carried[:max(1, (len(carried) + 1) // 2)]]


@dataclass(frozen=True)
class Curve:
    """A finished trial's curve as a reference: its signed metric after each epoch, the
    `coatsearch.search.stopping.SIGNALS` after each epoch (None where not recorded) and its static objectives (signed
    FLOPs, params)."""

    values: tuple[float, ...]
    signals: tuple[tuple[float | None, ...], ...] = ()
    statics: tuple[float, ...] = ()


def _features(values: Sequence[float], signals: Sequence[Sequence[float | None]], statics: Sequence[float],
              seen: int, last: int, ceiling: float | None) -> np.ndarray | None:
    """What the regression reads of a curve's first ``seen`` epochs: at the ``last`` latest
    of them the metric (its log distance below the ``ceiling``, or itself without one) and
    the log of each signal, and the log of each static objective's size; None where one is
    missing or out of range."""
    epochs = range(max(0, seen - last), seen)
    try:
        metric = [math.log(ceiling - values[e]) if ceiling is not None else values[e] for e in epochs]
        logged = [math.log(v) for e in epochs for v in signals[e]]  # type: ignore[arg-type]
        sizes = [math.log(abs(s)) for s in statics]
    except (ValueError, TypeError, IndexError):
        return None
    out = np.array(metric + logged + sizes, dtype=float)
    return out if np.isfinite(out).all() else None


def _from_regression(trial: Curve, references: Sequence[Curve], max_epochs: int,
                     ceiling: float | None) -> tuple[float, float] | None:
    """The learned prior (`coatsearch.search.curve_regression`): the final metric regressed
    on the `_features` of the finished curves' first epochs, as many as the trial has run,
    reading the number of latest epochs of `LAST` whose leave-one-out error is least; its
    mean and variance (that mean squared error, on the metric's scale, grown with the
    trial's leverage)."""
    seen = len(trial.values)
    best: tuple[float, float, float] | None = None
    for last in sorted({min(n, seen) for n in LAST}):
        own = _features(trial.values, trial.signals, trial.statics, seen, last, ceiling)
        if own is None:
            continue
        rows, finals = [], []
        for ref in references:
            if len(ref.values) < max_epochs or len(ref.statics) != len(trial.statics):
                continue
            x = _features(ref.values, ref.signals, ref.statics, seen, last, ceiling)
            if x is not None and (ceiling is None or ref.values[max_epochs - 1] < ceiling):
                rows.append(x)
                finals.append(ref.values[max_epochs - 1])
        if not rows:
            continue
        final = np.array(finals)
        targets = np.log(ceiling - final) if ceiling is not None else final
        fitted = regress(own, np.array(rows), targets)
        if fitted is None:
            continue
        prediction, residuals, leverage = fitted
        back = (lambda t: ceiling - np.exp(t)) if ceiling is not None else (lambda t: t)
        error = float(np.mean((final - back(targets - residuals)) ** 2))
        if best is None or error < best[2]:
            best = (float(back(np.array(prediction))), error * (1 + leverage), error)
    return None if best is None else best[:2]


def predict(values: Sequence[float], max_epochs: int, references: Sequence[Sequence[float] | Curve] = (),
            families: Sequence[str] = tuple(FAMILIES), ceiling: float | None = None,
            signals: Sequence[Sequence[float | None]] = (), statics: Sequence[float] = (),
            groups: Sequence[str] = GROUPS) -> tuple[float, float] | None:
    """Mean and standard deviation of the final (epoch ``max_epochs``) value of a curve
    whose first epochs are ``values`` (higher is better, at most ``ceiling`` when given;
    ``signals`` and ``statics`` as in `Curve`), from the ``groups`` of `GROUPS`: the
    ``families`` fitted to it, the full-length ``references`` carried onto it, and the
    regression learned from the references; None without a member that applies. The
    groups are combined weighted by the inverse of each one's variance."""
    y = np.asarray(values, dtype=float)
    curves = [r if isinstance(r, Curve) else Curve(tuple(float(v) for v in r)) for r in references]
    found: list[tuple[float, float] | None] = []
    if "families" in groups:
        found.append(_group(list(_family_members(tuple(float(v) for v in values), max_epochs, tuple(families)))))
    if "references" in groups:
        found.append(_group(_from_references(y, [c.values for c in curves], max_epochs, ceiling)))
    if "regression" in groups:
        trial = Curve(tuple(float(v) for v in values), tuple(tuple(s) for s in signals), tuple(statics))
        found.append(_from_regression(trial, curves, max_epochs, ceiling))
    kept = [g for g in found if g is not None]
    if not kept:
        return None
    weights = np.array([1 / (var + SD_FLOOR**2) for _, var in kept])
    mean = float(np.sum(weights * np.array([m for m, _ in kept])) / weights.sum())
    if ceiling is not None:
        mean = min(mean, ceiling)
    return mean, math.sqrt(1 / float(weights.sum()) + SD_FLOOR**2)


def _beats(probability_of: float) -> float:
    """Standard normal upper tail."""
    return 0.5 * math.erfc(probability_of / math.sqrt(2))


def _curve(course: Course, sign: float) -> Curve:
    """A course's signed metric, signals and statics, as the predictor reads them."""
    return Curve(tuple(sign * v for v in course.values if v is not None), course.signals, course.statics)


class CurveStopper:
    """Stops a trial whose extrapolated final metric is unlikely to beat the threshold."""

    def __init__(self, grace: int, max_epochs: int, threshold: float, top: int, sign: float,
                 ceiling: float | None = None) -> None:
        self.grace, self.max_epochs, self.threshold, self.top, self.sign = grace, max_epochs, threshold, top, sign
        self.ceiling = ceiling  # of the signed metric: 1 for an accuracy, 0 for a loss

    def prediction(self, trial: Course, finished: Sequence[Course]) -> tuple[float, float] | None:
        """Mean and SD of the trial's final signed metric."""
        values = [v for v in trial.values if v is not None]
        if len(values) != trial.epochs:
            return None
        references = [_curve(c, self.sign) for c in finished
                      if c.epochs == self.max_epochs and None not in c.values]
        own = _curve(trial, self.sign)
        return predict(own.values, self.max_epochs, references, ceiling=self.ceiling, signals=own.signals,
                       statics=own.statics)

    def bar(self, trial: Course, finished: Sequence[Course]) -> float | None:
        """The signed final value the trial must beat, or None while too few have finished."""
        finals = sorted((self.sign * c.values[-1] for c in finished  # type: ignore[operator]
                         if c.epochs == self.max_epochs and c.values[-1] is not None
                         and all(p >= q for p, q in zip(c.statics, trial.statics))), reverse=True)
        return finals[self.top - 1] if len(finals) >= self.top else None

    def judge(self, trial: Course, finished: Sequence[Course]) -> Verdict:
        if trial.epochs < self.grace or trial.epochs >= self.max_epochs:
            return CONTINUE
        predicted = self.prediction(trial, finished)
        if predicted is None:
            return CONTINUE
        mean, sd = predicted
        bar = self.bar(trial, finished)
        stop = bar is not None and _beats((bar - mean) / sd) < self.threshold
        return Verdict(stop, self.sign * mean, sd, trial.epochs)


def curve(early: Any, max_epochs: int) -> CurveStopper:
    """The ``curve`` scheduler of an ``early_stopping`` section."""
    ceiling = 1.0 if early.metric.endswith("acc") or "_acc_" in early.metric else 0.0  # accuracies; losses >= 0
    return CurveStopper(early.grace_period, max_epochs, early.threshold, early.top, early.direction.sign, ceiling)
