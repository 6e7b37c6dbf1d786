"""Counts as people write them: ``4.2G`` FLOPs, ``25M`` params.

One parser and one formatter, shared by budgets, search spaces and the command line, so
that a target typed anywhere reads the same.
"""

from __future__ import annotations

import math
import re
from typing import Any

_SCALES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
_NUMBER = re.compile(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGbBtT]?)\s*")


def parse_count(value: Any) -> float:
    """``4.2G`` -> 4.2e9, ``25M`` -> 2.5e7, ``1.5B`` -> 1.5e9; numbers pass through.

    Suffixes K, M, G (or B), T, either case. Raises `ValueError` for anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _NUMBER.fullmatch(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"expected a number with an optional K/M/G/B/T suffix (e.g. 4.2G), got {value!r}"
        )
    return float(match.group(1)) * _SCALES[match.group(2).lower()]


def format_count(value: float) -> str:
    """``4168806400`` -> ``4.17G``: two decimals and the largest fitting unit (K, M, G, T)."""
    if not math.isfinite(value):
        return str(value)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


#: Said wherever FLOPs are shown, so nobody reads them as 2x multiply-adds.
FLOPS_NOTE = "FLOPs are multiply-adds counted once (fvcore's convention)."


def value_label(value: object) -> str:
    """A parameter's value as written in a space (a CSV round trip turns 2 into 2.0);
    ``(missing)`` for a trial that has none (a parameter added to the space after it ran)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
