"""A space's ``prefilter``: every candidate of the space scored by a proxy when the space
is compiled, and only the best ``keep`` share searched (`SearchPlan.kept`); a draw outside
it is infeasible, recorded and not trained, as a candidate outside a budget is.

Every parameter must be discrete (the whole space is scored once). The kept set depends
on the space's network, budget, data and parameters and on the prefilter, not on the
sampler or its seed, and is computed once per process for each such space.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

from coatsearch.search.rows import point_key
from coatsearch.space import SearchSpace, SpaceError

#: Space fields that do not change which candidates exist or how they score.
_NOT_SCORED = ("study", "description", "seed", "trials", "sampler", "early_stopping", "backend", "table",
               "concurrency", "resources", "storage", "address", "retries", "objectives")
_KEPT: dict[str, frozenset[str]] = {}


def kept_points(space: SearchSpace, candidate: Callable[[dict[str, Any]], Any],
                infeasible: type[Exception]) -> frozenset[str]:
    """The point keys of the best ``keep`` share of the space's feasible candidates by
    the prefilter's proxy (at least one); ``candidate(params)`` is the compiled plan's
    (raising ``infeasible``). `SpaceError` for a continuous parameter or an unknown proxy."""
    from coatsearch.proxies import PROXIES
    from coatsearch.search.proxy_scores import score_candidate

    prefilter = space.prefilter
    assert prefilter is not None
    if prefilter.proxy not in PROXIES:
        raise SpaceError(f"prefilter.proxy: unknown proxy {prefilter.proxy!r}; expected {PROXIES.expected()}")
    cache_key = json.dumps({k: v for k, v in space.to_dict().items() if k not in _NOT_SCORED}, sort_keys=True,
                           default=str)
    if cache_key in _KEPT:
        return _KEPT[cache_key]
    values: dict[str, list[Any]] = {}
    for name, domain in space.params.items():
        try:
            values[name] = domain.grid_values()
        except ValueError:
            raise SpaceError(f"prefilter: params.{name} is continuous; a prefilter ranks a space of "
                             "discrete parameters") from None
    data: dict[Any, Any] = {}
    scored: list[tuple[float, str]] = []
    for combo in itertools.product(*values.values()):
        params = dict(zip(values, combo))
        try:
            found = candidate(params)
        except infeasible:
            continue
        value = score_candidate(space.seed, found, prefilter.proxy, prefilter.seed, data)
        scored.append((value if math.isfinite(value) else -math.inf, point_key(params)))
    scored.sort(key=lambda pair: -pair[0])
    kept = frozenset(key for _, key in scored[: max(1, math.ceil(prefilter.keep * len(scored)))])
    _KEPT[cache_key] = kept
    return kept
