"""What matching a budget takes and gives: the target (checked), the result
(`BudgetMatch`) and its one-line description, and `BudgetError` for an impossible target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from coatsearch import units
from coatsearch.errors import CoatsearchError
from coatsearch.flops import Counts, count_analytic
from coatsearch.spec import NetSpec
from coatsearch.units import format_count

Metric = Literal["flops", "params"]
ScaleBy = Literal["width", "depth", "both", "ratios"]

#: Targets above these are taken for typos (CoAtNet-7 is 2.4B params, ~2.6T FLOPs at 512).
SANITY_BOUND: dict[str, float] = {"flops": 1e14, "params": 1e11}

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


def check_target(flops: float | str | None, params: float | str | None) -> tuple[Metric, float]:
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


def describe(spec: NetSpec) -> str:
    channels = "/".join(str(s.channels) for s in spec.stages)
    blocks = "/".join(str(s.blocks) for s in spec.stages)
    return f"stem {spec.stem.channels}, channels {channels}, blocks {blocks}"


def unit_name(metric: str) -> str:
    return "FLOPs" if metric == "flops" else "params"


def named_result(original: NetSpec, spec: NetSpec, suffix: str) -> tuple[NetSpec, Counts]:
    """A matched spec, validated and named ``<original's name>@<suffix>`` when it differs
    from the original (unnamed when the original is), with its analytic counts."""
    if spec != original:
        name = f"{original.name}@{suffix}" if original.name else None
        spec = NetSpec.from_dict({**spec.to_dict(), "name": name})  # validated
    return spec, count_analytic(spec)
