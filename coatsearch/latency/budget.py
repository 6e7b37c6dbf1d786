"""A network's widths matched to a latency target through a profile: the FLOP matcher's
width search (`coatsearch.budget.scaler.Search`), with the predicted latency as the cost."""

from __future__ import annotations

from coatsearch.budget import BudgetError
from coatsearch.budget.scaler import Scaler, Search, Shape
from coatsearch.latency.model import predict
from coatsearch.latency.profile import Profile
from coatsearch.spec import NetSpec

#: How near the predicted latency the matcher aims before it settles. One width factor
#: steps by a multiple of 8 per stage, so its nearest shape can sit several percent off
#: the target, and that adds to the model's own error (a median of about 2.5% at one
#: thread); widths one multiple off the factor's (`Scaler.near_widths`) close that gap.
AIM = 0.01


class _LatencyScaler(Scaler):
    """A scaler whose cost is a shape's predicted milliseconds instead of its FLOPs."""

    def __init__(self, spec: NetSpec, batch: int, profile: Profile) -> None:
        super().__init__(spec, "flops")
        self.batch, self.profile = batch, profile

    def measure(self, shape: Shape) -> float:
        return predict(self.build(shape), self.batch, self.profile)


def match_latency(spec: NetSpec, target_ms: float, batch: int, profile: Profile,
                  tolerance: float = 0.05) -> tuple[NetSpec, float]:
    """The spec with every width scaled by one factor (rounded to its multiples), or where
    that misses the target by more than `AIM`, with widths one multiple off it (the
    fewest such steps among those within `AIM`), whose predicted latency at ``batch`` is
    nearest ``target_ms``; and that latency. `BudgetError` (one line) when no width comes
    within ``tolerance``."""
    if target_ms <= 0:
        raise BudgetError(f"latency_ms: the target must be positive, got {target_ms:g}")
    scaler = _LatencyScaler(spec, batch, profile)
    best = Search(scaler, target_ms, min(AIM, tolerance)).by_width(scaler.original.blocks)
    got = scaler.cost(best)
    if abs(got / target_ms - 1) > tolerance:
        tried = scaler.costs_seen
        raise BudgetError(f"latency_ms: no width of this network is predicted within {tolerance:.0%} of "
                          f"{target_ms:g} ms at batch {batch} (nearest {got:.3g} ms; widths tried reach "
                          f"{min(tried):.3g}-{max(tried):.3g} ms)")
    return NetSpec.model_validate(scaler.build(best).model_dump()), got
