"""A space's candidates ranked by a proxy (`coatsearch.proxies`) before anything trains:
what `coatsearch rank` prints and what a prefilter keeps.

The candidates are the ones a run would meet (the grid points it walks, or the first
``trials`` draws of its sampler, as the dry run lists them); each feasible one is scored
on images of the space's own data (read once per data setting and image size), with the
trial's learning rate and batch size for the cheap-fidelity baseline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coatsearch.proxies import PROXIES, ProxyData
from coatsearch.search.plan import SearchPlan
from coatsearch.search.preview import Preview, preview
from coatsearch.search.proxy_scores import score_candidate


@dataclass(frozen=True)
class Ranked:
    """One candidate with its proxy score (None when infeasible), the seconds scoring it
    took, and its place (1 = best; None when infeasible or the score is not finite)."""

    candidate: Preview
    score: float | None
    seconds: float
    rank: int | None = None


def rank_candidates(plan: SearchPlan, proxy: str, seed: int | None = None,
                    on_each: Callable[[int, int], None] | None = None) -> list[Ranked]:
    """Every candidate of ``plan`` scored by ``proxy``, best first (infeasible ones, and
    scores that are not finite, last). ``seed`` fixes the initial weights and the images
    (default: the trainer's seed); ``on_each(done, total)`` follows progress."""
    _ = PROXIES[proxy]  # an unknown name fails here, before any work
    candidates = preview(plan)
    data: dict[Any, ProxyData] = {}
    scored: list[Ranked] = []
    for done, shown in enumerate(candidates, 1):
        if shown.status != "ok" or shown.spec is None:
            scored.append(Ranked(shown, None, 0.0))
            continue
        start = time.perf_counter()
        value = score_candidate(plan.space.seed, plan.candidate(shown.sampled), proxy, seed, data)
        scored.append(Ranked(shown, value, time.perf_counter() - start))
        if on_each is not None:
            on_each(done, len(candidates))
    finite = sorted((r for r in scored if r.score is not None and math.isfinite(r.score)),
                    key=lambda r: -r.score)  # type: ignore[operator]
    ranked = [Ranked(r.candidate, r.score, r.seconds, place) for place, r in enumerate(finite, 1)]
    return ranked + [r for r in scored if r.score is None or not math.isfinite(r.score)]
