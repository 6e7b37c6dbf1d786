"""A network's widths matched to a latency target through a profile: the FLOP matcher's
width scaling (`coatsearch.budget.scaler`), with the predicted latency as the cost."""

from __future__ import annotations

from coatsearch.budget import MAX_SCALE, BudgetError
from coatsearch.budget.scaler import Scaler, Shape, bracket
from coatsearch.latency.model import predict
from coatsearch.latency.profile import Profile
from coatsearch.spec import NetSpec


def match_latency(spec: NetSpec, target_ms: float, batch: int, profile: Profile,
                  tolerance: float = 0.05) -> tuple[NetSpec, float]:
    """The spec with every width scaled by one factor (rounded to its multiples) whose
    predicted latency at ``batch`` is nearest ``target_ms``, and that latency.
    `BudgetError` (one line) when no width comes within ``tolerance``."""
    if target_ms <= 0:
        raise BudgetError(f"latency_ms: the target must be positive, got {target_ms:g}")
    scaler = Scaler(spec, "flops")
    blocks = scaler.original.blocks
    cache: dict[Shape, float] = {}

    def latency(shape: Shape) -> float:
        if shape not in cache:
            cache[shape] = predict(scaler.build(shape), batch, profile)
        return cache[shape]

    lo, hi = bracket(lambda f: latency(scaler.widths(f, blocks)), target_ms, scaler.min_width_factor, MAX_SCALE)  # type: ignore[arg-type,return-value]
    shapes = [scaler.widths(f, blocks) for f in (lo, hi) if f is not None]
    best = min(shapes, key=lambda s: abs(latency(s) / target_ms - 1))
    got = latency(best)
    if abs(got / target_ms - 1) > tolerance:
        reach = f"{min(cache.values()):.3g}-{max(cache.values()):.3g}"
        raise BudgetError(f"latency_ms: no width of this network is predicted within {tolerance:.0%} of "
                          f"{target_ms:g} ms at batch {batch} (nearest {got:.3g} ms; widths tried reach {reach} ms)")
    matched = NetSpec.model_validate(scaler.build(best).model_dump())
    return matched, got
