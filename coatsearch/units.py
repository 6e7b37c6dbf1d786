"""How counts are written for people: one formatter shared by the CLI and the report."""

from __future__ import annotations

#: Said wherever FLOPs are shown, so nobody reads them as 2x multiply-adds.
FLOPS_NOTE = "FLOPs are multiply-adds counted once (fvcore's convention)."


def format_count(value: float) -> str:
    """``4.17e9`` -> ``4.17G``, ``2.5e7`` -> ``25.00M``, ``512`` -> ``512``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"
