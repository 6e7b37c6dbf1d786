"""Scaled variants of one spec and the search among them: `Shape` (the integers scaling
changes), `Scaler` (a shape's spec and its cached cost), `bracket` (bisection on a
monotone step function) and `Search` (one target: by width, by depth, or both)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coatsearch.budget.result import Metric
from coatsearch.flops import count_analytic
from coatsearch.spec import CHANNEL_MULTIPLE, NetSpec, make_divisible

#: Scale factors searched: widths or middle-stage depths up to this many times the spec's.
MAX_SCALE = 1e4
#: ``by="both"``: how many depth variants (nearest first) are tried beside the width.
MAX_DEPTH_VARIANTS = 48
#: Width combinations tried when one factor misses (3 choices per width up to 7 widths).
MAX_WIDTH_VARIANTS = 3**7



@dataclass(frozen=True)
class Shape:
    """The integers scaling changes: stem, stage and pre-logits widths; stage blocks."""

    stem: int
    channels: tuple[int, ...]
    head_hidden: int | None
    blocks: tuple[int, ...]


class Scaler:
    """Scaled variants of one spec and their (cached) cost.

    The independent widths are the stages', the stem's and the pre-logits layer's; a stem
    or pre-logits layer as wide as its neighbouring stage stays so (scaling must not add a
    projection the original network did not have).
    """

    def __init__(self, spec: NetSpec, metric: Metric) -> None:
        self.spec = spec
        self.metric = metric
        self.quanta = tuple(s.width_multiple for s in spec.stages)
        self.stem_tied = spec.stem.channels == spec.stages[0].channels
        self.head_tied = spec.head_hidden == spec.stages[-1].channels
        self.scalable = spec.depth_stages
        self._cache: dict[Shape, float] = {}
        # (original width, multiple) of every independent width: stages, then stem, head
        free = [(s.channels, q) for s, q in zip(spec.stages, self.quanta)]
        if not self.stem_tied:
            free.append((spec.stem.channels, CHANNEL_MULTIPLE))
        if spec.head_hidden is not None and not self.head_tied:
            free.append((spec.head_hidden, CHANNEL_MULTIPLE))
        self.free = tuple(free)

    @property
    def original(self) -> Shape:
        spec = self.spec
        return Shape(
            spec.stem.channels,
            tuple(s.channels for s in spec.stages),
            spec.head_hidden,
            tuple(s.blocks for s in spec.stages),
        )

    @property
    def min_width_factor(self) -> float:
        """A factor at which every width sits at its smallest multiple."""
        return min(q / (4 * w) for w, q in self.free)

    # ------------------------------------------------------------------ shapes
    def shape_of(self, free: Sequence[int], blocks: tuple[int, ...]) -> Shape:
        """The shape of the free widths ``free`` (stages, then an untied stem and pre-logits)."""
        n = len(self.spec.stages)
        channels = tuple(free[:n])
        rest = list(free[n:])
        stem = channels[0] if self.stem_tied else rest.pop(0)
        head = self.spec.head_hidden
        if head is not None:
            head = channels[-1] if self.head_tied else rest.pop(0)
        return Shape(stem, channels, head, blocks)

    def widths(self, factor: float, blocks: tuple[int, ...]) -> Shape:
        """Every width times ``factor``, rounded to its nearest multiple."""
        return self.shape_of([make_divisible(factor * w, q) for w, q in self.free], blocks)

    def near_widths(self, factor: float, blocks: tuple[int, ...]) -> list[tuple[float, Shape]]:
        """Shapes whose widths sit one multiple either side of their nearest at ``factor``.

        Each comes with its distortion: how far, in multiples, its widths stray from the
        exact shares in total. Beyond `MAX_WIDTH_VARIANTS` combinations, only the multiples
        just below and just above each exact share are combined.
        """
        exact = [(factor * w, q) for w, q in self.free]
        options = []
        for value, q in exact:
            if 3 ** len(exact) <= MAX_WIDTH_VARIANTS:
                nearest = make_divisible(value, q)
                choices = {nearest - q, nearest, nearest + q}
            else:
                choices = {math.floor(value / q) * q, math.ceil(value / q) * q}
            options.append(sorted({max(q, c) for c in choices}))
        out = []
        for free in itertools.product(*options):
            distortion = sum(abs(w - v) / q for w, (v, q) in zip(free, exact))
            out.append((distortion, self.shape_of(free, blocks)))
        return out

    def depths(self, factor: float, shape: Shape) -> Shape:
        """The blocks of the spec's `depth_stages` times ``factor``, rounded half up, at
        least 1 (the rule of `NetSpec.scaled`)."""
        blocks = tuple(
            max(1, int(factor * s.blocks + 0.5)) if i in self.scalable else s.blocks
            for i, s in enumerate(self.spec.stages)
        )
        return Shape(shape.stem, shape.channels, shape.head_hidden, blocks)

    def build(self, shape: Shape) -> NetSpec:
        """The spec of a shape, unvalidated (fast); `named_result` validates the one returned."""
        spec = self.spec
        stages = tuple(
            s.model_copy(update={"channels": c, "blocks": b})
            for s, c, b in zip(spec.stages, shape.channels, shape.blocks)
        )
        stem = spec.stem.model_copy(update={"channels": shape.stem})
        return spec.model_copy(update={"stem": stem, "stages": stages, "head_hidden": shape.head_hidden})

    def cost(self, shape: Shape) -> float:
        """What ``shape`` costs, computed once per shape (`measure`)."""
        if shape not in self._cache:
            self._cache[shape] = self.measure(shape)
        return self._cache[shape]

    def measure(self, shape: Shape) -> float:
        """The metric of ``shape``'s spec: its analytic FLOPs or parameters."""
        counts = count_analytic(self.build(shape))
        return counts.flops if self.metric == "flops" else counts.params

    @property
    def costs_seen(self) -> list[float]:
        """The cost of every shape tried so far."""
        return list(self._cache.values())


def bracket(
    cost_at: Callable[[float], float], target: float, low: float, high: float
) -> tuple[float | None, float | None]:
    """Factors just under and just over the step where ``cost_at`` crosses ``target``.

    ``cost_at`` is a non-decreasing step function on ``[low, high]``: double or halve from
    1 to bracket the target, then bisect to the step. Either side is None when the target
    lies outside what ``[low, high]`` reaches.
    """
    x = min(max(1.0, low), high)
    lo: float | None = x if cost_at(x) <= target else None
    hi: float | None = None if lo is not None else x
    while lo is not None and hi is None:
        nxt = min(lo * 2, high)
        if cost_at(nxt) > target:
            hi = nxt
        elif nxt >= high:
            break
        else:
            lo = nxt
    while hi is not None and lo is None:
        nxt = max(hi / 2, low)
        if cost_at(nxt) <= target:
            lo = nxt
        elif nxt <= low:
            break
        else:
            hi = nxt
    if lo is not None and hi is not None:
        for _ in range(100):
            if hi / lo < 1 + 1e-12:
                break
            mid = math.sqrt(lo * hi)
            if cost_at(mid) <= target:
                lo = mid
            else:
                hi = mid
    return lo, hi


@dataclass(frozen=True)
class Search:
    """One matching problem: a scaler, a target and the tolerance."""

    scaler: Scaler
    target: float
    tolerance: float

    def error(self, shape: Shape) -> float:
        return abs(self.scaler.cost(shape) / self.target - 1)

    def closest(self, shapes: Sequence[Shape]) -> Shape:
        return min(shapes, key=self.error)

    def fits(self, shape: Shape) -> bool:
        return self.error(shape) <= self.tolerance

    def width_factors(self, blocks: tuple[int, ...]) -> list[float]:
        """The one-factor widths just under and just over the target at these blocks."""
        scaler = self.scaler
        lo, hi = bracket(
            lambda f: scaler.cost(scaler.widths(f, blocks)), self.target,
            scaler.min_width_factor, MAX_SCALE,
        )
        return [f for f in (lo, hi) if f is not None]

    def by_width(self, blocks: tuple[int, ...], refine: bool = True) -> Shape:
        """One factor for every width; if that misses, widths within a multiple of it."""
        scaler = self.scaler
        factors = self.width_factors(blocks)
        best = self.closest([scaler.widths(f, blocks) for f in factors])
        if self.fits(best) or not refine:
            return best
        near = [pair for f in factors for pair in scaler.near_widths(f, blocks)]
        fitting = [(d, self.error(s), s) for d, s in near if self.fits(s)]
        if fitting:
            return min(fitting, key=lambda t: t[:2])[2]
        return self.closest([best] + [s for _, s in near])

    def by_depth(self, start: Shape) -> Shape:
        scaler = self.scaler
        low = 1 / (2 * max(s.blocks for s in scaler.spec.stages))
        lo, hi = bracket(
            lambda d: scaler.cost(scaler.depths(d, start)), self.target, low, MAX_SCALE
        )
        return self.closest([scaler.depths(d, start) for d in (lo, hi) if d is not None])

    def depth_variants(self, base: Shape) -> list[Shape]:
        """Block counts of the middle stages near the spec's, nearest first."""
        scaler = self.scaler
        total = sum(base.blocks[i] for i in scaler.scalable)
        seen = {base.blocks}
        variants = []
        for step in range(1, 4 * total + 1):
            for sign in (1, -1):
                if total + sign * step <= 0:
                    continue
                shape = scaler.depths((total + sign * step) / total, base)
                if shape.blocks not in seen:
                    seen.add(shape.blocks)
                    variants.append(shape)
            if len(variants) >= MAX_DEPTH_VARIANTS:
                break
        return variants[:MAX_DEPTH_VARIANTS]

    def by_both(self, base: Shape) -> Shape:
        """The width first; when it misses, the nearest depths with a one-factor width,
        then the best few of them with widths within a multiple."""
        best = self.by_width(base.blocks)
        if self.fits(best):
            return best
        tried = []
        for variant in self.depth_variants(base):  # nearest first: the first fit wins
            shape = self.by_width(variant.blocks, refine=False)
            if self.fits(shape):
                return shape
            tried.append((self.error(shape), variant))
        for _, variant in sorted(tried, key=lambda pair: pair[0])[:3]:
            best = self.closest([best, self.by_width(variant.blocks)])
            if self.fits(best):
                break
        return best
