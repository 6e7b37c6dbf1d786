"""When a parameter's effect is not its alone: a budget that matched every candidate by
scaling its widths (or depth) reshapes each value of a searched parameter differently, so
comparing the values compares those shapes too. The report and the terminal say so beside
the effects, with the shapes each value got.
"""

from __future__ import annotations

import pandas as pd

from coatsearch.report.data import Run
from coatsearch.units import format_count


def shape_notes(run: Run) -> dict[str, str]:
    """By searched parameter: a one-line note when the budget gave its values networks of
    other widths or depths (nothing without a matched budget or when the shapes agree)."""
    if not run.study.matched:
        return {}
    ranked = run.ranked
    notes = {}
    for column in run.design.factors:  # param.<name> columns
        factor = column.removeprefix("param.")
        if column not in ranked:
            continue
        by_value = ranked.dropna(subset=[column]).groupby(column, sort=True)
        shapes = {value: _common(part, "channels") for value, part in by_value}
        if len(shapes) < 2 or len(set(shapes.values())) < 2:
            continue
        params = ranked["params"].dropna() if "params" in ranked else pd.Series(dtype=float)
        spread = f"; params {format_count(params.min())}–{format_count(params.max())}" if len(params) else ""
        listed = ", ".join(f"{shape} at {value}" for value, shape in shapes.items())
        notes[factor] = (f"{factor}: every candidate was matched to {run.study.budget or ', '.join(run.study.matched)}, "
                         f"which gave each value its own widths (channels {listed}{spread}): the effect of {factor} "
                         "includes that of the shapes it induces.")
    return notes


def _common(part: pd.DataFrame, column: str) -> str:
    """The most frequent value of ``column`` among a value's trials."""
    values = part[column].dropna().astype(str) if column in part else pd.Series(dtype=str)
    return str(values.mode().iloc[0]) if len(values) else "?"
