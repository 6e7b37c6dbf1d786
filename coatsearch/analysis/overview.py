"""Everything a report, a study and the command line say about a results table, computed
once: the design, each factor's effect, the comparisons, the per-configuration summary,
the importances and a scaling study's fits. `write_tables` writes the CSVs all of them
point at, so ``comparisons.csv`` means one thing wherever it is found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coatsearch.analysis.comparisons import comparisons
from coatsearch.analysis.design import Design
from coatsearch.analysis.effects import Effect, effect, effects_frame, importances
from coatsearch.analysis.fits import ScalingFits, scaling_fits
from coatsearch.analysis.summaries import summarise
from coatsearch.files import write_atomic


@dataclass(frozen=True)
class Analysis:
    design: Design
    effects: tuple[Effect, ...]
    comparisons: pd.DataFrame
    summary: pd.DataFrame
    importances: dict[str, float] | None
    scaling: ScalingFits | None

    def effect_of(self, factor: str) -> Effect | None:
        name = factor.removeprefix("param.")
        return next((e for e in self.effects if e.parameter == name), None)


def analyse(table: pd.DataFrame, design: Design) -> Analysis:
    """The analysis of ``table`` as an experiment of ``design``."""
    found = tuple(e for c in design.factors if (e := effect(table, c, design)) is not None)
    return Analysis(design, found, comparisons(table, design), summarise(table, design),
                    importances(table, list(design.factors)), scaling_fits(table))


#: The tables `write_tables` writes, by file name.
TABLES = ("effects.csv", "comparisons.csv", "summary.csv")


def write_tables(analysis: Analysis, folder: Path) -> list[Path]:
    """``effects.csv``, ``comparisons.csv`` and ``summary.csv`` in ``folder``."""
    frames = {"effects.csv": effects_frame(list(analysis.effects)), "comparisons.csv": analysis.comparisons,
              "summary.csv": analysis.summary}
    paths = []
    for name in TABLES:
        write_atomic(folder / name, frames[name].to_csv(index=False))
        paths.append(folder / name)
    return paths
