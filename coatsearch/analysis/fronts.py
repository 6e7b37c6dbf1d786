"""Pareto fronts: which trials are non-dominated, and how much they cover.

`non_dominated` and `hypervolume_2d` work on plain arrays (tested on hand-made points);
`pareto_front` applies them to a results table's rankable trials, for ``pareto.csv``, the
report's Pareto set and its 2-D fronts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from coatsearch.results import ranked


def _as_costs(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Flip the signs of maximised objectives so that smaller is better everywhere."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError("values must be (n, objectives)")
    return values * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)


def non_dominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the rows no other row dominates.

    A row dominates another when it is at least as good in every objective and strictly
    better in one. Equal rows do not dominate each other, so ties stay on the front.
    """
    costs = _as_costs(values, maximize)
    n = len(costs)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(costs <= costs[i], axis=1)
        better = np.any(costs < costs[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask


def hypervolume_2d(values: np.ndarray, maximize: Sequence[bool], reference: Sequence[float]) -> float:
    """Area that the points dominate, bounded by ``reference`` (in the objectives' units).

    The reference point is the worst corner that still counts: points not strictly better
    than it in both objectives add nothing. Dominated and repeated points add nothing
    either, so the value depends on the front only. Computed by sweeping the points in
    order of the first objective and adding one horizontal strip per improvement of the
    second.
    """
    if len(maximize) != 2 or len(reference) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives and a 2-D reference point")
    costs = _as_costs(np.asarray(values, dtype=float).reshape(-1, 2), maximize)
    ref = _as_costs(np.asarray(reference, dtype=float).reshape(1, 2), maximize)[0]
    inside = np.all(np.isfinite(costs), axis=1) & np.all(costs < ref, axis=1)
    points = costs[inside]
    points = points[np.lexsort((points[:, 1], points[:, 0]))]
    area, level = 0.0, ref[1]
    for x, y in points:
        if y < level:
            area += (ref[0] - x) * (level - y)
            level = y
    return float(area)


def pareto_front(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The non-dominated full-fidelity trials for ``[(metric, "max"|"min"), ...]``."""
    candidates = ranked(frame).dropna(subset=[m for m, _ in objectives])
    if candidates.empty:
        return candidates
    mask = non_dominated(candidates[[m for m, _ in objectives]].to_numpy(), [d == "max" for _, d in objectives])
    first = objectives[0]
    return candidates[mask].sort_values(first[0], ascending=first[1] == "min")
