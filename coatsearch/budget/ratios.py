"""A FLOP budget met with the widths' ratios kept exactly (``by="ratios"``): the shape of
the CoAtNet family, whose stage widths double from S1 to S4.

Why: matching widths by one factor rounds each width to its own multiple (8, and the head
dim in attention stages), and matching FLOPs and params together moves single widths a
multiple off their nearest; either can break the doubling, leaving an attention stage of
two heads beside one with most of the parameters. Here the widths are the spec's times
one factor *at which every width lands exactly on its multiple* (a C-C-T-T of
32/64/128/256 with head dim 32: 8/16/32/64, 16/32/64/128, 24/48/96/192, ...; a C-T-T-T,
whose S2 attends, from 16/32/64/128), and the depth of the
middle stages moves to meet the FLOPs. Of the shapes within tolerance, the one nearest
the spec's own depth wins (as `coatsearch.budget.both` keeps it: the comparison stays
about the layout, not the depth). A params target is not met: with the ratios fixed, the
few widths left rarely meet both, and choosing by params drives the depth to extremes
(C-C-C-T at 16/32/64/128 wide and 5/8 blocks in S2/S3); its error is stated.
"""

from __future__ import annotations

import math
from fractions import Fraction

from coatsearch.budget.both import BOTH_DEPTH_FACTORS, depth_distance
from coatsearch.budget.result import BudgetError, BudgetMatch, describe, named_result
from coatsearch.budget.scaler import Scaler, Shape
from coatsearch.spec import NetSpec
from coatsearch.units import format_count

#: The most steps of the exact-ratio ladder tried (the first width up to this many of its steps).
MAX_RATIO_STEPS = 256


def ratio_widths(scaler: Scaler) -> list[tuple[int, ...]]:
    """Every set of free widths (stages, then an untied stem and pre-logits) that keeps the
    spec's ratios exactly with each width on its multiple, narrowest first."""
    widths = [w for w, _ in scaler.free]
    ratios = [Fraction(w, widths[0]) for w in widths]
    # u * r lands on a multiple of m exactly when u is a multiple of m / r; with m / r = a / b
    # in lowest terms and u a whole number, that is when u is a multiple of a
    step = math.lcm(*((Fraction(multiple) / ratio).numerator for ratio, (_, multiple) in zip(ratios, scaler.free)))
    return [tuple(int(step * k * r) for r in ratios) for k in range(1, MAX_RATIO_STEPS + 1)]


def match_ratios(spec: NetSpec, flops: float, params: float | None, tolerance: float, strict: bool) -> BudgetMatch:
    """``spec`` at ``flops`` within ``tolerance`` with its widths' ratios kept exactly, at the
    depth nearest its own (see the module); ``params``, when given, is reported beside."""
    if not 0 < tolerance < 1:
        raise BudgetError(f"tolerance: expected a fraction between 0 and 1, got {tolerance:g}")
    by_flops = Scaler(spec, "flops")
    original = by_flops.original
    ladder = ratio_widths(by_flops)
    shapes: dict[tuple[tuple[int, ...], tuple[int, ...]], Shape] = {}
    for free in ladder:
        at_width = by_flops.shape_of(free, original.blocks)
        if by_flops.cost(by_flops.depths(0.0, at_width)) > flops * (1 + tolerance):
            break  # the narrowest depth is already over: wider only costs more
        for factor in BOTH_DEPTH_FACTORS:
            shape = by_flops.depths(factor, at_width)
            shapes.setdefault((shape.channels, shape.blocks), shape)
    if not shapes:
        narrowest = by_flops.depths(0.0, by_flops.shape_of(ladder[0], original.blocks))
        raise BudgetError(f"flops: target {format_count(flops)} is below the narrowest shape that keeps the widths' "
                          f"ratios ({format_count(by_flops.cost(narrowest))} FLOPs at "
                          f"{describe(by_flops.build(narrowest))})")

    def flops_error(shape: Shape) -> float:
        return abs(by_flops.cost(shape) / flops - 1)

    fitting = [s for s in shapes.values() if flops_error(s) <= tolerance]
    if fitting:
        best = min(fitting, key=lambda s: (depth_distance(spec, s.blocks), flops_error(s)))
    else:
        best = min(shapes.values(), key=flops_error)
    spec_out, counts = named_result(spec, by_flops.build(best), f"{format_count(flops)}-flops-ratios")
    e_flops = counts.flops / flops - 1
    errors = {"flops": e_flops}
    message = f"{format_count(counts.flops)} FLOPs ({e_flops:+.2%}) with the widths' ratios kept"
    if params is not None:
        errors["params"] = counts.params / params - 1
        message += f", {format_count(counts.params)} params ({errors['params']:+.2%} from {format_count(params)}, not matched)"
    message += f": {describe(spec_out)}"
    within = abs(e_flops) <= tolerance
    if not within:
        message += (f"; misses the {tolerance:.0%} tolerance, closest spec shown "
                    "(widths move in whole ratio steps, blocks one at a time)")
        if strict:
            raise BudgetError(f"flops: {message}")
    targets = {"flops": flops, **({"params": params} if params is not None else {})}
    return BudgetMatch(spec=spec_out, flops=counts.flops, params=counts.params, target=flops, metric="flops",
                       relative_error=e_flops, within_tolerance=within, message=message, targets=targets,
                       errors=errors)
