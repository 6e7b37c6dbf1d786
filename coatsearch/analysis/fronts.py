"""Pareto fronts: which trials are non-dominated, and how much they cover.

`non_dominated` and `hypervolume_2d` work on plain arrays (tested on hand-made points);
`pareto_front` applies them to a results table's rankable trials, for ``pareto.csv`` and the
report's Pareto set; `cost_fronts` gives the 2-D fronts of accuracy against each cost
(`front_mask`, `front_hypervolume`), which the report draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coatsearch.results import ranked
from coatsearch.units import format_count

#: The hypervolume's reference cost is this multiple of the largest ranked cost, so the
#: costliest front point still adds area.
REFERENCE_MARGIN = 1.1
#: What each cost a 2-D front is drawn against is called in words.
COST_NAMES = {"flops": "FLOPs", "params": "parameters", "latency_ms": "latency"}


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


@dataclass(frozen=True)
class Hypervolume:
    """A 2-D front's hypervolume, normalised by the box between the ideal and the reference."""

    value: float
    reference_cost: float
    metric: str

    def describe(self) -> str:
        cost = self.reference_cost
        shown = format_count(cost) if self.metric in ("flops", "params") else f"{cost:.3g} ms"
        return (
            f"hypervolume {self.value:.3f}: the share of the box from (accuracy 0, "
            f"{COST_NAMES[self.metric]} {shown} = {REFERENCE_MARGIN:g} × the largest ranked) "
            f"to (accuracy 1, {COST_NAMES[self.metric]} 0) that the front dominates"
        )


def front_mask(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """The rows non-dominated in (validation accuracy up, ``metric`` down)."""
    return non_dominated(frame[[metric, "val_acc"]].to_numpy(), [False, True])


def front_hypervolume(ranked: pd.DataFrame, metric: str) -> Hypervolume | None:
    """Hypervolume of accuracy against ``metric`` over ranked trials, in [0, 1]."""
    points = ranked.dropna(subset=["val_acc", metric])
    if points.empty:
        return None
    reference = REFERENCE_MARGIN * float(points[metric].max())
    if reference <= 0:
        return None
    area = hypervolume_2d(points[[metric, "val_acc"]].to_numpy(), [False, True], [reference, 0.0])
    return Hypervolume(area / reference, reference, metric)


@dataclass(frozen=True)
class CostFront:
    """Validation accuracy against one cost over the ranked trials: the non-dominated ones
    (``front``, in order of cost, then accuracy) and the hypervolume they cover."""

    metric: str
    front: pd.DataFrame
    hypervolume: Hypervolume | None


def cost_fronts(table: pd.DataFrame) -> dict[str, CostFront]:
    """The 2-D front of accuracy against each cost (`COST_NAMES`) the ranked trials have."""
    found = {}
    for metric in COST_NAMES:
        if metric not in table or "val_acc" not in table:
            continue
        points = ranked(table).dropna(subset=["val_acc", metric])
        if points.empty:
            continue
        front = points[front_mask(points, metric)].sort_values([metric, "val_acc"])
        found[metric] = CostFront(metric, front, front_hypervolume(points, metric))
    return found
