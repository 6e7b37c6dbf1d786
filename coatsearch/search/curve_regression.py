"""A learned prior for learning-curve prediction: a ridge regression, fitted across the
finished trials, of their final metric on what their first epochs recorded (the metric,
the training and validation losses, the network's size). Early in a short schedule a
curve's own shape says little about where it ends (the learning rate is still high), but
how fast a network fits its training data, set beside how the finished networks that fit
as fast ended, says much more. It is fitted afresh for each prediction from the finished
trials only, so a trial never informs its own prediction.

The ridge penalty is chosen among `PENALTIES` by the finished trials' own leave-one-out
error (computed exactly from the hat matrix, no refitting); that error, grown with the
trial's distance from the finished trials' features (its leverage), is the prediction's
variance.
"""

from __future__ import annotations

import numpy as np

#: Ridge penalties tried, on standardized features (the one with the least leave-one-out error is used).
PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0)
#: Finished trials needed beyond the features' count before the regression is used.
SPARE = 3


def ridge_loo(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Weights and intercept of a ridge fit of ``y`` on standardized ``x`` (the intercept
    unpenalized), each sample's leave-one-out residual (``e_i / (1 - h_ii)``), and the
    matrix that gives a new row's leverage (`leverage`)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    centre = float(y.mean())
    inverse = np.linalg.inv(z.T @ z + penalty * np.eye(z.shape[1]))
    beta = inverse @ z.T @ (y - centre)
    hat = np.einsum("ij,jk,ik->i", z, inverse, z) + 1.0 / len(y)
    residuals = (y - centre - z @ beta) / np.maximum(1.0 - hat, 1e-6)
    weights = beta / scale
    scaled_inverse = inverse / np.outer(scale, scale)
    return weights, centre - float(mean @ weights), residuals, scaled_inverse


def regress(features: np.ndarray, reference_features: np.ndarray, finals: np.ndarray
            ) -> tuple[float, np.ndarray, float] | None:
    """The regression's prediction for ``features`` (one row), the references'
    leave-one-out residuals at the penalty chosen, and the row's leverage (``1/n`` at the
    references' mean, growing with its distance from them: a prediction's variance is the
    residuals' times one plus it, so a network unlike every finished one, say larger than
    any, gets a wide interval); None with too few references. The row is predicted from
    its features clipped into the references' range, so the fit is never extrapolated."""
    if len(finals) < reference_features.shape[1] + SPARE:
        return None
    best: tuple[float, np.ndarray, float, np.ndarray, np.ndarray] | None = None
    for penalty in PENALTIES:
        weights, intercept, residuals, inverse = ridge_loo(reference_features, finals, penalty)
        error = float(np.mean(residuals**2))
        if best is None or error < best[0]:
            best = (error, weights, intercept, residuals, inverse)
    assert best is not None
    _, weights, intercept, residuals, inverse = best
    centred = features - reference_features.mean(axis=0)
    leverage = float(centred @ inverse @ centred) + 1.0 / len(finals)
    inside = np.clip(features, reference_features.min(axis=0), reference_features.max(axis=0))
    return float(inside @ weights + intercept), residuals, leverage
