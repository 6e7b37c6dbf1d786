"""How well a proxy ranks networks as their trained accuracy does: Kendall's τ and
Spearman's ρ with percentile-bootstrap 95% intervals (networks resampled in pairs), and the
rank average that combines several proxies. Used by scripts/calibrate_proxies.py; numpy and
scipy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Correlation:
    """τ and ρ of one proxy against accuracy over ``n`` networks, each with its interval
    (NaN where fewer than 3 networks, or the scores do not vary)."""

    n: int
    tau: float
    tau_lo: float
    tau_hi: float
    rho: float
    rho_lo: float
    rho_hi: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each row pair of ``x`` and ``y`` (resamples x networks); NaN where
    a row does not vary."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n0 = x.shape[1] * (x.shape[1] - 1) / 2
    tied_x = ((sx == 0).sum((1, 2)) - x.shape[1]) / 2
    tied_y = ((sy == 0).sum((1, 2)) - x.shape[1]) / 2
    with np.errstate(all="ignore"):
        return (sx * sy).sum((1, 2)) / 2 / np.sqrt((n0 - tied_x) * (n0 - tied_y))


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair: Pearson's r of the (tie-averaged) ranks."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(all="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))


def correlation(scores: Sequence[float], accuracy: Sequence[float], *, resamples: int = 2000,
                seed: int = 0) -> Correlation:
    """τ and ρ of ``scores`` against ``accuracy``, with 95% intervals from ``resamples``
    bootstrap resamples of the networks (the 2.5th and 97.5th percentiles)."""
    x, y = np.asarray(scores, dtype=float), np.asarray(accuracy, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        nan = float("nan")
        return Correlation(n, nan, nan, nan, nan, nan, nan)
    tau, rho = float(_kendall(x[None], y[None])[0]), float(_spearman(x[None], y[None])[0])
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    taus, rhos = [], []
    for chunk in np.array_split(index, max(1, resamples // 200)):
        taus.append(_kendall(x[chunk], y[chunk]))
        rhos.append(_spearman(x[chunk], y[chunk]))
    draws = np.stack([np.concatenate(taus), np.concatenate(rhos)], axis=1)
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    return Correlation(n, tau, float(lo[0]), float(hi[0]), rho, float(lo[1]), float(hi[1]))


def rank_average(columns: Sequence[Sequence[float]]) -> np.ndarray:
    """The mean of each network's ranks under several proxies (higher = better in each): a
    combined score that no one proxy's scale dominates."""
    return np.mean([stats.rankdata(np.asarray(c, dtype=float)) for c in columns], axis=0)
