"""`match_budget`: a spec scaled by width, depth or both to one target (FLOPs or params),
or to both targets at once (`coatsearch.budget.both`)."""

from __future__ import annotations

from coatsearch.budget.both import match_both
from coatsearch.budget.ratios import match_ratios
from coatsearch.budget.result import (
    BudgetError,
    BudgetMatch,
    ScaleBy,
    check_target,
    describe,
    named_result,
    parse_count,
    unit_name,
)
from coatsearch.budget.scaler import MAX_SCALE, Scaler, Search, Shape
from coatsearch.spec import CHANNEL_MULTIPLE, NetSpec
from coatsearch.units import format_count


def match_budget(
    spec: NetSpec,
    flops: float | str | None = None,
    params: float | str | None = None,
    by: ScaleBy = "width",
    tolerance: float = 0.01,
    strict: bool = False,
) -> BudgetMatch:
    """Scale ``spec`` so its FLOPs (or parameters, or both) meet the target.

    Given both ``flops`` and ``params``, width and depth move together (`match_both`):
    the depth stages' blocks by one factor, every width by another, so that both targets
    are met within ``tolerance``, at the depth nearest the spec's own that does; ``by``
    does not apply, except ``by="ratios"`` (`match_ratios`): widths keep their ratios
    exactly (a doubling stays a doubling) and the depth moves, to meet the FLOPs at the
    depth nearest the spec's own; a ``params`` target is reported, not met.

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
    if by == "ratios":
        if flops is None:
            raise BudgetError("by: 'ratios' meets a FLOP target (a params target is only reported); give flops")
        _, flops_target = check_target(flops, None)
        params_target = None if params is None else check_target(None, params)[1]
        return match_ratios(spec, flops_target, params_target, tolerance, strict)
    if flops is not None and params is not None:
        return match_both(spec, parse_count(flops, "flops"), parse_count(params, "params"), tolerance, strict)
    metric, target = check_target(flops, params)
    if by not in ("width", "depth", "both"):
        raise BudgetError(f"by: expected 'width', 'depth', 'both' or 'ratios', got {by!r}")
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance: expected a fraction between 0 and 1, got {tolerance:g}")

    scaler = Scaler(spec, metric)
    search = Search(scaler, target, tolerance)
    base = scaler.original
    _check_reachable(search, by)
    if by == "width":
        best = search.by_width(base.blocks)
    elif by == "depth":
        best = search.by_depth(base)
    else:
        best = search.by_both(base)
    return _finish(search, best, by, strict)


def _check_reachable(search: Search, by: str) -> None:
    """Raise `BudgetError` when the target lies beyond what scaling ``by`` can reach."""
    scaler, target, unit = search.scaler, search.target, unit_name(search.scaler.metric)
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
            f"{describe(scaler.build(smallest))})"
        )
    if target > ceiling * (1 + search.tolerance):
        raise BudgetError(
            f"{scaler.metric}: target {format_count(target)} is beyond what {by} scaling "
            f"reaches ({format_count(ceiling)} {unit} at {MAX_SCALE:g}x)"
        )


def _finish(search: Search, shape: Shape, by: str, strict: bool) -> BudgetMatch:
    scaler, target, tolerance = search.scaler, search.target, search.tolerance
    spec, counts = named_result(scaler.spec, scaler.build(shape), f"{format_count(target)}-{scaler.metric}")
    achieved = counts.flops if scaler.metric == "flops" else counts.params
    error = achieved / target - 1
    within = abs(error) <= tolerance
    message = (
        f"{format_count(achieved)} {unit_name(scaler.metric)} for a target of "
        f"{format_count(target)} ({error:+.2%}) by {by}: {describe(spec)}; "
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
