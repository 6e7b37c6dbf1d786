"""Everything a report, a study and the command line say about a results table, computed
once: the design, each factor's effect, the comparisons, the per-configuration summary,
the importances, a scaling study's fits, and the ranking under the run's objectives (the
Pareto set and the best trial). `write_tables` writes the CSVs all of them
point at, so ``comparisons.csv`` means one thing wherever it is found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from coatsearch.analysis.comparisons import comparisons
from coatsearch.analysis.design import Design
from coatsearch.analysis.effects import Effect, effect, effects_frame, importances
from coatsearch.analysis.fits import ScalingFits, scaling_fits
from coatsearch.analysis.fronts import CostFront, cost_fronts
from coatsearch.analysis.ranking import BestConfiguration, best_configuration, pareto_set
from coatsearch.analysis.summaries import summarise
from coatsearch.files import write_atomic
from coatsearch.results import ranked

#: The objectives of a table whose run names none: validation accuracy, up.
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = (("val_acc", "max"),)


@dataclass(frozen=True)
class Analysis:
    """What one results table says, computed once and read by every view of it (the
    terminal, the HTML report, a study's README and CSVs): the experiment's ``design``,
    each factor's ``effects`` with intervals, the ``comparisons`` between values, the
    per-configuration ``summary``, fANOVA ``importances``, a scaling ladder's fits, and
    the ranking under the run's ``objectives``: the Pareto ``front`` and the ``best``
    configuration (over seeds) with the trial of it to hand on; and accuracy's 2-D front
    against each cost (``cost_fronts``, by cost column) with its hypervolume."""

    design: Design
    effects: tuple[Effect, ...]
    comparisons: pd.DataFrame
    summary: pd.DataFrame
    importances: dict[str, float] | None
    scaling: ScalingFits | None
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES
    front: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: BestConfiguration | None = None
    cost_fronts: dict[str, CostFront] = field(default_factory=dict)

    def effect_of(self, factor: str) -> Effect | None:
        name = factor.removeprefix("param.")
        return next((e for e in self.effects if e.parameter == name), None)


def analyse(table: pd.DataFrame, design: Design,
            objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES) -> Analysis:
    """The analysis of ``table`` as an experiment of ``design``, ranked by ``objectives``
    (``[(metric, "max"|"min"), ...]``, the run's own)."""
    binned = design.binned(table)  # a continuous factor by its quantile bins, not one row per value
    found = tuple(e for c in design.factors if (e := effect(binned, c, design)) is not None)
    objectives = tuple((m, str(d)) for m, d in objectives)
    return Analysis(design, found, comparisons(binned, design), summarise(table, design),
                    importances(binned, list(design.factors)), scaling_fits(table), objectives,
                    pareto_set(table, objectives), best_configuration(ranked(table), objectives),
                    cost_fronts(table))


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
