"""FLOPs and parameters matched together (the paper's "similar parameter size and
computational cost"): width and depth move together, at the depth nearest the spec's own."""

from __future__ import annotations

import math
from collections.abc import Sequence

from coatsearch.budget.result import BudgetError, BudgetMatch, check_target, describe, named_result
from coatsearch.budget.scaler import Scaler, Search, Shape
from coatsearch.spec import NetSpec
from coatsearch.units import format_count

#: Depth factors tried when matching FLOPs and params together (distinct block counts only).
BOTH_DEPTH_FACTORS = tuple(round(0.2 * 1.05**k, 6) for k in range(80))


def match_both(spec: NetSpec, flops: float, params: float, tolerance: float, strict: bool) -> BudgetMatch:
    """FLOPs and params together: for each depth (one factor on the depth stages), the
    width that meets the FLOPs; of the specs within ``tolerance`` of both targets, the one
    whose depth is closest to the spec's own (`depth_distance`), then the closest to both
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
        check_target(value if name == "flops" else None, value if name == "params" else None)
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance: expected a fraction between 0 and 1, got {tolerance:g}")
    by_flops, by_params = Scaler(spec, "flops"), Scaler(spec, "params")
    search = Search(by_flops, flops, tolerance)

    def errors(shape: Shape) -> tuple[float, float]:
        return by_flops.cost(shape) / flops - 1, by_params.cost(shape) / params - 1

    def score(shape: Shape) -> float:
        return max(abs(e) for e in errors(shape))

    seen: dict[tuple[int, ...], Shape] = {}
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

    def preference(shape: Shape) -> tuple[float, float]:
        return depth_distance(spec, shape.blocks), score(shape)

    best = min(seen.values(), key=score)
    for shape in sorted(seen.values(), key=preference):  # nearest depth first: the first fit wins
        if score(shape) > tolerance:
            near = [s for f in search.width_factors(shape.blocks) for _, s in by_flops.near_widths(f, shape.blocks)]
            shape = min([shape, *near], key=score)
        if score(shape) <= tolerance:
            best = shape
            break
        best = min(best, shape, key=score)
    spec_out, counts = named_result(spec, by_flops.build(best), f"{format_count(flops)}-flops-{format_count(params)}-params")
    e_flops, e_params = counts.flops / flops - 1, counts.params / params - 1
    within = max(abs(e_flops), abs(e_params)) <= tolerance
    message = (
        f"{format_count(counts.flops)} FLOPs ({e_flops:+.2%}) and {format_count(counts.params)} params "
        f"({e_params:+.2%}) for targets of {format_count(flops)} and {format_count(params)}: {describe(spec_out)}"
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


def depth_distance(spec: NetSpec, blocks: Sequence[int]) -> float:
    """How far ``blocks`` are from ``spec``'s depth: ``|log(blocks / spec's blocks)|`` summed
    over its depth stages (the ones matching moves), 0 at the spec's own depth."""
    stages = spec.depth_stages
    base = sum(spec.stages[i].blocks for i in stages)
    return abs(math.log(sum(blocks[i] for i in stages) / base))
