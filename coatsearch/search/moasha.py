"""Multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al., 2021): at
each rung ``grace * rf**k`` a trial continues only if it is in the top ``1/rf`` of the
trials recorded there, ranked by non-dominated sorting of their objective vectors at that
rung (validation accuracy at that epoch, FLOPs, params), ties within a front broken by
crowding distance (NSGA-II's), so that a network good at any budget survives, not only
the most accurate. Neither Optuna nor Ray Tune prunes multi-objective searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from coatsearch.search.rungs import CONTINUE, Course, Verdict, rung_ladder


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Each row's front (0 = non-dominated), every column higher-is-better."""
    n = len(points)
    better_eq = (points[:, None, :] >= points[None, :, :]).all(axis=2)
    strictly = (points[:, None, :] > points[None, :, :]).any(axis=2)
    dominates: Any = better_eq & strictly  # dominates[i, j]: i dominates j
    ranks = np.full(n, -1)
    left = list(range(n))
    front = 0
    while left:
        members = [j for j in left if not any(dominates[i, j] for i in left)]
        ranks[members] = front
        left = [j for j in left if j not in members]
        front += 1
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front (boundary points infinite)."""
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(points[:, k], kind="stable")
        span = points[order[-1], k] - points[order[0], k]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / span
    return distance


def promoted(points: np.ndarray, factor: int) -> np.ndarray:
    """Which rows are in the top ``1/factor`` (at least one) by front, then crowding."""
    ranks = nondominated_ranks(points)
    spread = np.zeros(len(points))
    for front in np.unique(ranks):
        members = np.flatnonzero(ranks == front)
        spread[members] = crowding(points[members])
    order = np.lexsort((-spread, ranks))
    keep = np.zeros(len(points), dtype=bool)
    keep[order[:max(1, len(points) // factor)]] = True
    return keep


class MoAsha:
    """MO-ASHA by epoch on the trials' objective vectors (`Course.vectors`)."""

    def __init__(self, grace: int, factor: int, max_epochs: int) -> None:
        self.factor = factor
        self.rungs = rung_ladder(grace, factor, max_epochs)

    def judge(self, trial: Course, finished: Sequence[Course]) -> Verdict:
        epoch = trial.epochs
        if epoch not in self.rungs:
            return CONTINUE
        peers = [c.vectors[epoch - 1] for c in finished if c.epochs >= epoch]
        if len(peers) < self.factor:
            return CONTINUE
        points = np.array([trial.vectors[-1], *peers], dtype=float)
        points[~np.isfinite(points)] = -1e300  # an unmeasured objective ranks last
        return Verdict(not bool(promoted(points, self.factor)[0]))


def moasha(early: Any, max_epochs: int) -> MoAsha:
    """The ``moasha`` scheduler of an ``early_stopping`` section."""
    return MoAsha(early.grace_period, early.reduction_factor, max_epochs)
