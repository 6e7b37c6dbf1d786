"""Learning-curve extrapolation (after Domhan et al., 2015): predict a trial's final
metric from the epochs it has run, and stop it when that prediction is unlikely to beat
what the search already holds.

The prediction is the mean of an ensemble: parametric families (`FAMILIES`: pow3,
log-power, exponential, Janoschek, log-linear) fitted by least squares
(`scipy.optimize.curve_fit`) to the epochs seen so far, each used only where there are
more epochs than it has parameters, and the finished trials' own curves, each shifted
onto the trial's epochs (a family that needs one parameter, so it predicts from the
first epoch on, and carries the shape a learning-rate schedule gives every curve). Its
uncertainty is the spread of the members' predictions together with the fits'
residuals, never below ``SD_FLOOR``. The metric is fitted signed, so that higher is better.

A trial stops when the probability (normal, from that mean and standard deviation) that
its final value beats the threshold is below ``early_stopping.threshold``. The threshold
is the ``top``-th best final value among the finished full-fidelity trials that are at
least as good in every static objective (FLOPs, params): with one objective the
``top``-th best so far; with several, what the trial must beat to join the front.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coatsearch.search.rungs import CONTINUE, Course, Verdict

#: The smallest standard deviation a prediction is given (the metric's scale, a fraction).
SD_FLOOR = 0.01


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


#: name -> (function, initial guess, (lower, upper) bounds)
FAMILIES: dict[str, tuple[Callable[..., np.ndarray], list[float], tuple[list[float], list[float]]]] = {
    "pow3": (_pow3, [1.0, 0.5, 0.5], ([-10, -10, 0.01], [10, 10, 5])),
    "log_power": (_log_power, [1.0, 1.0, -1.0], ([-10, -10, -5], [10, 10, -0.01])),
    "exp3": (_exp3, [1.0, 0.5, 0.5], ([-10, -10, 0.01], [10, 10, 5])),
    "janoschek": (_janoschek, [1.0, 0.0, 0.5, 1.0], ([-10, -10, 0.001, 0.1], [10, 10, 5, 5])),
    "log_linear": (_log_linear, [0.5, 0.1], ([-10, -10], [10, 10])),
}


def _fit_family(name: str, x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float] | None:
    """The family's prediction at ``at`` and its residuals' RMS, or None where the fit fails."""
    from scipy.optimize import curve_fit

    function, guess, bounds = FAMILIES[name]
    if len(x) <= len(guess):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted, _ = curve_fit(function, x, y, p0=guess, bounds=bounds, maxfev=400)
    except (RuntimeError, ValueError):
        return None
    prediction = float(function(np.array([at], dtype=float), *fitted)[0])
    residual = float(np.sqrt(np.mean((function(x, *fitted) - y) ** 2)))
    return (prediction, residual) if math.isfinite(prediction) else None


def predict(values: Sequence[float], max_epochs: int, references: Sequence[Sequence[float]] = (),
            families: Sequence[str] = tuple(FAMILIES)) -> tuple[float, float] | None:
    """Mean and standard deviation of the final (epoch ``max_epochs``) value of a curve
    whose first epochs are ``values`` (higher is better), from the ``families`` and the
    full-length ``references`` shifted onto it; None without a member that applies."""
    y = np.asarray(values, dtype=float)
    x = np.arange(1, len(y) + 1, dtype=float)
    members: list[tuple[float, float]] = []
    for name in families:
        fit = _fit_family(name, x, y, max_epochs)
        if fit is not None:
            members.append(fit)
    shifted = []
    for ref in references:
        r = np.asarray(ref, dtype=float)
        if len(r) >= max_epochs and len(r) >= len(y):
            offset = y - r[:len(y)]
            distance = float(np.sqrt(np.mean(offset**2)))
            shifted.append((distance, float(r[max_epochs - 1] + offset.mean()), float(offset.std())))
    if shifted:  # the nearest references count: the quarter closest to the trial's epochs
        shifted.sort(key=lambda m: m[0])
        members += [(p, residual) for _, p, residual in shifted[:max(1, len(shifted) // 4)]]
    if not members:
        return None
    predictions = np.array([m[0] for m in members])
    residual = float(np.sqrt(np.mean([m[1] ** 2 for m in members])))
    sd = math.sqrt(float(predictions.var()) + residual**2 + SD_FLOOR**2)
    return float(predictions.mean()), sd


def _beats(probability_of: float) -> float:
    """Standard normal upper tail."""
    return 0.5 * math.erfc(probability_of / math.sqrt(2))


class CurveStopper:
    """Stops a trial whose extrapolated final metric is unlikely to beat the threshold."""

    def __init__(self, grace: int, max_epochs: int, threshold: float, top: int, sign: float) -> None:
        self.grace, self.max_epochs, self.threshold, self.top, self.sign = grace, max_epochs, threshold, top, sign

    def prediction(self, trial: Course, finished: Sequence[Course]) -> tuple[float, float] | None:
        """Mean and SD of the trial's final signed metric."""
        values = [v for v in trial.values if v is not None]
        if len(values) != trial.epochs:
            return None
        references = [[self.sign * v for v in c.values if v is not None] for c in finished
                      if c.epochs == self.max_epochs and None not in c.values]
        return predict([self.sign * v for v in values], self.max_epochs, references)

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
    return CurveStopper(early.grace_period, max_epochs, early.threshold, early.top, early.direction.sign)
