"""Scale a spec to a FLOP or parameter budget.

Why: the paper's layout comparisons only mean something because every candidate has
"similar parameter size and computational cost". `match_budget` makes that a call: it
scales a spec's widths (one factor for every stage and the stem) or the block counts of its
middle stages, preserving the layout and the ratios between stages, until the analytic
count (`coatsearch.flops.count_analytic`, exact and sub-millisecond) meets the target.

Widths and blocks are integers, so a target is met only as closely as they allow: channels
move in multiples of 8 (and of ``head_dim`` in ``T`` stages), blocks one at a time. The
cost is monotone in the scale factor, so a bisection finds the two specs on either side of
the target and the closer one wins. When neither is within tolerance, width matching also
lets each width sit one multiple off its nearest (narrow search specs need it: at 16-32
channels one multiple is 25-50% of a width) and keeps the fitting spec closest to the
exact ratios; ``by="both"`` also moves the depth, by as few blocks as it takes. A spec that
still misses is returned with a message that says so, or `BudgetError` is raised with
``strict=True``.

FLOPs and parameters together (the paper's "similar parameter size and computational
cost") leave the depth almost free, since both grow about as depth x width squared: of
the shapes that meet both, the one nearest the spec's own depth is kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from coatsearch import units
from coatsearch.errors import CoatsearchError
from coatsearch.flops import count_analytic
from coatsearch.spec import CHANNEL_MULTIPLE, NetSpec, make_divisible
from coatsearch.units import format_count

Metric = Literal["flops", "params"]
ScaleBy = Literal["width", "depth", "both"]

#: Targets above these are taken for typos (CoAtNet-7 is 2.4B params, ~2.6T FLOPs at 512).
SANITY_BOUND: dict[str, float] = {"flops": 1e14, "params": 1e11}
#: Scale factors searched: widths or middle-stage depths up to this many times the spec's.
MAX_SCALE = 1e4
#: ``by="both"``: how many depth variants (nearest first) are tried beside the width.
MAX_DEPTH_VARIANTS = 48
#: Width combinations tried when one factor misses (3 choices per width up to 7 widths).
MAX_WIDTH_VARIANTS = 3**7


class BudgetError(CoatsearchError):
    """An impossible or malformed budget. The message is one line naming the field."""


@dataclass(frozen=True)
class BudgetMatch:
    """A spec scaled to a budget, with what it achieved.

    ``relative_error`` is signed: ``achieved / target - 1`` for the matched ``metric``.
    """

    spec: NetSpec
    flops: int
    params: int
    target: float
    metric: Metric
    relative_error: float
    within_tolerance: bool
    message: str
    #: Matching FLOPs and params together: both targets and both signed errors.
    targets: dict[str, float] | None = None
    errors: dict[str, float] | None = None


def parse_count(text: str | float | int, field: str = "target") -> float:
    """``"4.2G"`` -> 4.2e9 (see `coatsearch.units.parse_count`); `BudgetError` naming
    ``field`` when it is not a count."""
    try:
        return units.parse_count(text)
    except ValueError as exc:
        raise BudgetError(f"{field}: {exc}") from None


@dataclass(frozen=True)
class _Shape:
    """The integers scaling changes: stem, stage and pre-logits widths; stage blocks."""

    stem: int
    channels: tuple[int, ...]
    head_hidden: int | None
    blocks: tuple[int, ...]


class _Scaler:
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
        self._cache: dict[_Shape, int] = {}
        # (original width, multiple) of every independent width: stages, then stem, head
        free = [(s.channels, q) for s, q in zip(spec.stages, self.quanta)]
        if not self.stem_tied:
            free.append((spec.stem.channels, CHANNEL_MULTIPLE))
        if spec.head_hidden is not None and not self.head_tied:
            free.append((spec.head_hidden, CHANNEL_MULTIPLE))
        self.free = tuple(free)

    @property
    def original(self) -> _Shape:
        spec = self.spec
        return _Shape(
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
    def _shape(self, free: Sequence[int], blocks: tuple[int, ...]) -> _Shape:
        n = len(self.spec.stages)
        channels = tuple(free[:n])
        rest = list(free[n:])
        stem = channels[0] if self.stem_tied else rest.pop(0)
        head = self.spec.head_hidden
        if head is not None:
            head = channels[-1] if self.head_tied else rest.pop(0)
        return _Shape(stem, channels, head, blocks)

    def widths(self, factor: float, blocks: tuple[int, ...]) -> _Shape:
        """Every width times ``factor``, rounded to its nearest multiple."""
        return self._shape([make_divisible(factor * w, q) for w, q in self.free], blocks)

    def near_widths(self, factor: float, blocks: tuple[int, ...]) -> list[tuple[float, _Shape]]:
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
            out.append((distortion, self._shape(free, blocks)))
        return out

    def depths(self, factor: float, shape: _Shape) -> _Shape:
        """The blocks of the spec's `depth_stages` times ``factor``, rounded half up, at
        least 1 (the rule of `NetSpec.scaled`)."""
        blocks = tuple(
            max(1, int(factor * s.blocks + 0.5)) if i in self.scalable else s.blocks
            for i, s in enumerate(self.spec.stages)
        )
        return _Shape(shape.stem, shape.channels, shape.head_hidden, blocks)

    def build(self, shape: _Shape) -> NetSpec:
        """The spec of a shape, unvalidated (fast); `_finish` validates the one returned."""
        spec = self.spec
        stages = tuple(
            s.model_copy(update={"channels": c, "blocks": b})
            for s, c, b in zip(spec.stages, shape.channels, shape.blocks)
        )
        stem = spec.stem.model_copy(update={"channels": shape.stem})
        return spec.model_copy(update={"stem": stem, "stages": stages, "head_hidden": shape.head_hidden})

    def cost(self, shape: _Shape) -> int:
        if shape not in self._cache:
            counts = count_analytic(self.build(shape))
            self._cache[shape] = counts.flops if self.metric == "flops" else counts.params
        return self._cache[shape]


def _bracket(
    cost_at: Callable[[float], int], target: float, low: float, high: float
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
class _Search:
    """One matching problem: a scaler, a target and the tolerance."""

    scaler: _Scaler
    target: float
    tolerance: float

    def error(self, shape: _Shape) -> float:
        return abs(self.scaler.cost(shape) / self.target - 1)

    def closest(self, shapes: Sequence[_Shape]) -> _Shape:
        return min(shapes, key=self.error)

    def fits(self, shape: _Shape) -> bool:
        return self.error(shape) <= self.tolerance

    def width_factors(self, blocks: tuple[int, ...]) -> list[float]:
        """The one-factor widths just under and just over the target at these blocks."""
        scaler = self.scaler
        lo, hi = _bracket(
            lambda f: scaler.cost(scaler.widths(f, blocks)), self.target,
            scaler.min_width_factor, MAX_SCALE,
        )
        return [f for f in (lo, hi) if f is not None]

    def by_width(self, blocks: tuple[int, ...], refine: bool = True) -> _Shape:
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

    def by_depth(self, start: _Shape) -> _Shape:
        scaler = self.scaler
        low = 1 / (2 * max(s.blocks for s in scaler.spec.stages))
        lo, hi = _bracket(
            lambda d: scaler.cost(scaler.depths(d, start)), self.target, low, MAX_SCALE
        )
        return self.closest([scaler.depths(d, start) for d in (lo, hi) if d is not None])

    def depth_variants(self, base: _Shape) -> list[_Shape]:
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

    def by_both(self, base: _Shape) -> _Shape:
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


def _check_target(flops: float | str | None, params: float | str | None) -> tuple[Metric, float]:
    if (flops is None) == (params is None):
        got = "both" if flops is not None else "neither"
        raise BudgetError(f"budget: give a target, flops or params (got {got})")
    metric: Metric = "flops" if flops is not None else "params"
    value = flops if flops is not None else params
    assert value is not None
    target = parse_count(value, metric)
    if not math.isfinite(target) or target <= 0:
        raise BudgetError(
            f"{metric}: the target must be a positive number, got {format_count(target)}"
        )
    if target > SANITY_BOUND[metric]:
        raise BudgetError(
            f"{metric}: target {format_count(target)} is above the sanity bound of "
            f"{format_count(SANITY_BOUND[metric])}; check the units"
        )
    return metric, target


def _describe(spec: NetSpec) -> str:
    channels = "/".join(str(s.channels) for s in spec.stages)
    blocks = "/".join(str(s.blocks) for s in spec.stages)
    return f"stem {spec.stem.channels}, channels {channels}, blocks {blocks}"


def _unit(metric: str) -> str:
    return "FLOPs" if metric == "flops" else "params"


def match_budget(
    spec: NetSpec,
    flops: float | str | None = None,
    params: float | str | None = None,
    by: ScaleBy = "width",
    tolerance: float = 0.01,
    strict: bool = False,
) -> BudgetMatch:
    """Scale ``spec`` so its FLOPs (or parameters, or both) meet the target.

    Given both ``flops`` and ``params``, width and depth move together (`_match_both`):
    the depth stages' blocks by one factor, every width by another, so that both targets
    are met within ``tolerance``, at the depth nearest the spec's own that does; ``by``
    does not apply.

    ``by="width"`` multiplies every stage width, the stem's and the pre-logits' by one
    factor, rounded to multiples of 8 and of each T stage's ``head_dim``; when no factor
    lands within ``tolerance``, widths may sit one multiple off their nearest, and of the
    specs that fit the one closest to the exact ratios wins. ``by="depth"`` scales the
    block counts of the middle stages (S2/S3 of a four-stage network) by one factor,
    rounded. ``by="both"`` matches the width and, when that misses, also moves the depth,
    by as few blocks as it takes. Targets take numbers or strings such as ``"4.2G"``.

    Returns the closest spec with its counts. Raises `BudgetError` for a target that is not
    positive, above `SANITY_BOUND`, outside what the scaling reaches, or (``strict=True``)
    missed by more than ``tolerance``.
    """
    if flops is not None and params is not None:
        return _match_both(spec, parse_count(flops, "flops"), parse_count(params, "params"), tolerance, strict)
    metric, target = _check_target(flops, params)
    if by not in ("width", "depth", "both"):
        raise BudgetError(f"by: expected 'width', 'depth' or 'both', got {by!r}")
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance: expected a fraction between 0 and 1, got {tolerance:g}")

    scaler = _Scaler(spec, metric)
    search = _Search(scaler, target, tolerance)
    base = scaler.original
    _check_reachable(search, by)
    if by == "width":
        best = search.by_width(base.blocks)
    elif by == "depth":
        best = search.by_depth(base)
    else:
        best = search.by_both(base)
    return _finish(search, best, by, strict)


def _check_reachable(search: _Search, by: str) -> None:
    """Raise `BudgetError` when the target lies beyond what scaling ``by`` can reach."""
    scaler, target, unit = search.scaler, search.target, _unit(search.scaler.metric)
    base = scaler.original
    smallest = base if by == "depth" else scaler.widths(scaler.min_width_factor, base.blocks)
    largest = base if by == "depth" else scaler.widths(MAX_SCALE, base.blocks)
    if by != "width":
        smallest = scaler.depths(0.0, smallest)
        largest = scaler.depths(MAX_SCALE, largest)
    floor, ceiling = scaler.cost(smallest), scaler.cost(largest)
    if target < floor * (1 - search.tolerance):
        raise BudgetError(
            f"{scaler.metric}: target {format_count(target)} is below the smallest spec "
            f"{by} scaling reaches ({format_count(floor)} {unit} at "
            f"{_describe(scaler.build(smallest))})"
        )
    if target > ceiling * (1 + search.tolerance):
        raise BudgetError(
            f"{scaler.metric}: target {format_count(target)} is beyond what {by} scaling "
            f"reaches ({format_count(ceiling)} {unit} at {MAX_SCALE:g}x)"
        )


def _finish(search: _Search, shape: _Shape, by: str, strict: bool) -> BudgetMatch:
    scaler, target, tolerance = search.scaler, search.target, search.tolerance
    original = scaler.spec
    spec = scaler.build(shape)
    if spec != original:
        name = f"{original.name}@{format_count(target)}-{scaler.metric}" if original.name else None
        spec = NetSpec.from_dict({**spec.to_dict(), "name": name})  # validated
    counts = count_analytic(spec)
    achieved = counts.flops if scaler.metric == "flops" else counts.params
    error = achieved / target - 1
    within = abs(error) <= tolerance
    message = (
        f"{format_count(achieved)} {_unit(scaler.metric)} for a target of "
        f"{format_count(target)} ({error:+.2%}) by {by}: {_describe(spec)}; "
        f"{format_count(counts.params)} params, {format_count(counts.flops)} FLOPs"
    )
    if not within:
        if by == "depth":
            step = "blocks come in whole numbers"
        else:
            step = "channels come in multiples of " + "/".join(
                str(q) for q in sorted({CHANNEL_MULTIPLE, *scaler.quanta})
            )
        hint = "" if by == "both" else "; by='both' moves width and depth together"
        message += f"; misses the {tolerance:.0%} tolerance, closest spec shown ({step}{hint})"
        if strict:
            raise BudgetError(f"{scaler.metric}: {message}")
    return BudgetMatch(
        spec=spec,
        flops=counts.flops,
        params=counts.params,
        target=target,
        metric=scaler.metric,
        relative_error=error,
        within_tolerance=within,
        message=message,
    )


#: Depth factors tried when matching FLOPs and params together (distinct block counts only).
BOTH_DEPTH_FACTORS = tuple(round(0.2 * 1.05**k, 6) for k in range(80))


def _match_both(spec: NetSpec, flops: float, params: float, tolerance: float, strict: bool) -> BudgetMatch:
    """FLOPs and params together: for each depth (one factor on the depth stages), the
    width that meets the FLOPs; of the specs within ``tolerance`` of both targets, the one
    whose depth is closest to the spec's own (`_depth_distance`), then the closest to both
    targets. When no depth fits with one width factor, widths one multiple off their
    nearest are tried, nearest depth first.

    Why depth first: FLOPs and parameters both grow about as depth x width squared, so
    their ratio barely pins the depth, and many shapes meet both targets. The one closest
    to both targets is then an accident of rounding, and it can be a degenerate network
    (a one-block ViT-REL, a C-T-T-T of 1/1/1/1 blocks) that differs from the others in
    depth more than in layout. Keeping each layout near the base's depth keeps the
    comparison about the layout. The paper compares layouts at similar FLOPs *and* params;
    which of a layout's shapes gets there is this search's choice, and this is it."""
    for name, value in (("flops", flops), ("params", params)):
        _check_target(value if name == "flops" else None, value if name == "params" else None)
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance: expected a fraction between 0 and 1, got {tolerance:g}")
    by_flops, by_params = _Scaler(spec, "flops"), _Scaler(spec, "params")
    search = _Search(by_flops, flops, tolerance)

    def errors(shape: _Shape) -> tuple[float, float]:
        return by_flops.cost(shape) / flops - 1, by_params.cost(shape) / params - 1

    def score(shape: _Shape) -> float:
        return max(abs(e) for e in errors(shape))

    seen: dict[tuple[int, ...], _Shape] = {}
    for factor in BOTH_DEPTH_FACTORS:
        blocks = by_flops.depths(factor, by_flops.original).blocks
        if blocks in seen:
            continue
        try:
            seen[blocks] = search.by_width(blocks, refine=False)
        except BudgetError:
            continue
    if not seen:
        raise BudgetError(f"flops: target {format_count(flops)} is beyond what width and depth scaling reach")

    def preference(shape: _Shape) -> tuple[float, float]:
        return _depth_distance(spec, shape.blocks), score(shape)

    best = min(seen.values(), key=score)
    for shape in sorted(seen.values(), key=preference):  # nearest depth first: the first fit wins
        if score(shape) > tolerance:
            near = [s for f in search.width_factors(shape.blocks) for _, s in by_flops.near_widths(f, shape.blocks)]
            shape = min([shape, *near], key=score)
        if score(shape) <= tolerance:
            best = shape
            break
        best = min(best, shape, key=score)
    spec_out = by_flops.build(best)
    if spec_out != spec:
        label = f"{spec.name}@{format_count(flops)}-flops-{format_count(params)}-params" if spec.name else None
        spec_out = NetSpec.from_dict({**spec_out.to_dict(), "name": label})
    counts = count_analytic(spec_out)
    e_flops, e_params = counts.flops / flops - 1, counts.params / params - 1
    within = max(abs(e_flops), abs(e_params)) <= tolerance
    message = (
        f"{format_count(counts.flops)} FLOPs ({e_flops:+.2%}) and {format_count(counts.params)} params "
        f"({e_params:+.2%}) for targets of {format_count(flops)} and {format_count(params)}: {_describe(spec_out)}"
    )
    if not within:
        message += (f"; no spec of this layout meets both within {tolerance:.0%} (closest shown); "
                    "its FLOPs-per-parameter differ too much from the target's")
        if strict:
            raise BudgetError(f"budget: {message}")
    return BudgetMatch(
        spec=spec_out, flops=counts.flops, params=counts.params, target=flops, metric="flops",
        relative_error=e_flops, within_tolerance=within, message=message,
        targets={"flops": flops, "params": params}, errors={"flops": e_flops, "params": e_params},
    )


def _depth_distance(spec: NetSpec, blocks: Sequence[int]) -> float:
    """How far ``blocks`` are from ``spec``'s depth: ``|log(blocks / spec's blocks)|`` summed
    over its depth stages (the ones matching moves), 0 at the spec's own depth."""
    stages = spec.depth_stages
    base = sum(spec.stages[i].blocks for i in stages)
    return abs(math.log(sum(blocks[i] for i in stages) / base))
