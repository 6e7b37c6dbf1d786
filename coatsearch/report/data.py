"""What a report is built from: a run directory's results table and its space.

The report reads ``results.csv`` and, for the study's name and objectives, ``space.yaml``
(see `coatsearch.results`). It reads the space leniently, field by field, instead of
validating the whole space: a report of an old run must not fail because the space schema
has moved on since, and a run directory without a space still gets a report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from coatsearch.analysis import Analysis, Design, analyse
from coatsearch.analysis.ranking import front_objectives
from coatsearch.errors import CoatsearchError
from coatsearch.files import load_yaml_file
from coatsearch.objectives import Direction, Objective
from coatsearch.results import TableError, ranked, read_table
from coatsearch.units import format_count, parse_count

#: Above this many distinct values a numeric colour column is drawn as a colour scale.
MAX_CATEGORIES = 12
#: Colours for categories, in order; the same group gets the same colour in every figure.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)


class ReportError(CoatsearchError):
    """A run directory that cannot be reported on; one line naming the file and the problem."""


@dataclass(frozen=True)
class Study:
    """The parts of the space a report shows: name, description, objectives."""

    name: str
    description: str | None
    objectives: tuple[tuple[str, str], ...]
    searched: tuple[str, ...] = ()  # the space's parameters, in its order
    budget: str | None = None  # "flops 32M within 3%" when every candidate was matched to a target
    params: dict[str, Any] = field(default_factory=dict)  # the space's params mapping, as written
    sampler: str | None = None
    #: the space's fields a reader checks first (data, train, backend, trials, ...), as written
    settings: dict[str, Any] = field(default_factory=dict)
    #: the costs every candidate was matched to (the budget's targets): not ranked on
    matched: tuple[str, ...] = ()

    @property
    def ranked_by(self) -> tuple[tuple[str, str], ...]:
        """The objectives trials are ranked by (`front_objectives`)."""
        return front_objectives(self.objectives, self.matched)


@dataclass(frozen=True)
class Run:
    """One run directory, loaded: the study and its results table."""

    run_dir: Path
    study: Study
    table: pd.DataFrame

    @classmethod
    def of(cls, run_dir: Path, study: Study, table: pd.DataFrame, analysis: Analysis | None = None) -> Run:
        """A run held in memory (just written), with its analysis when already computed."""
        run = cls(run_dir, study, table)
        if analysis is not None:
            run.__dict__["analysis"] = analysis  # what `analysis` (a cached property) would compute
        return run

    @property
    def ranked(self) -> pd.DataFrame:
        """Complete trials at full fidelity: the only ones fronts and rankings use."""
        return ranked(self.table)

    @functools.cached_property
    def design(self) -> Design:
        return Design.of(self.table, self.study.params, self.study.sampler)

    @functools.cached_property
    def analysis(self) -> Analysis:
        """The table's analysis, computed on first use and shared by every view of it."""
        return analyse(self.table, self.design, self.study.ranked_by)


def read_study(run_dir: Path) -> Study:
    """Name, description and objectives from ``space.yaml``; defaults when it is absent."""
    path = run_dir / "space.yaml"
    if not path.exists():
        return Study(run_dir.name, None, (("val_acc", Direction.of("val_acc")),))
    data = load_yaml_file(path, ReportError, "saved space")
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping of space fields")
    return study_of(data, run_dir, path)


def study_of(data: dict[str, Any], run_dir: Path, path: Path | None = None) -> Study:
    """The study a space's fields describe (a ``space.yaml`` as read, or a space's
    ``to_dict()``), read field by field; ``path`` names the file in errors."""
    path = path or run_dir / "space.yaml"
    objectives = []
    for i, item in enumerate(data.get("objectives") or ["val_acc"]):
        try:
            objective = Objective.model_validate(item)
        except ValidationError:
            raise ReportError(
                f"{path}: objectives[{i}]: expected one of val_acc, flops, params, latency_ms "
                f"(optionally :max or :min), got {item!r}"
            ) from None
        objectives.append((objective.metric, objective.direction))
    description = data.get("description")
    params = data.get("params")
    params = params if isinstance(params, dict) else {}
    return Study(str(data.get("study") or run_dir.name), str(description) if description else None, tuple(objectives),
                 tuple(str(p) for p in params), _budget_text(data.get("budget")), params,
                 str(data["sampler"]) if data.get("sampler") else None,
                 {k: data[k] for k in SETTINGS if data.get(k) is not None}, _matched(data.get("budget")))


#: The space's fields the report's settings card shows.
SETTINGS = ("data", "train", "backend", "trials", "concurrency", "seed", "split_total", "warm_start")


def _matched(budget: object) -> tuple[str, ...]:
    """The costs a space's budget matched every candidate to."""
    if not isinstance(budget, dict):
        return ()
    return tuple(m for m in ("flops", "params") if budget.get(m) is not None)


def _budget_text(budget: object) -> str | None:
    """``flops 32M within 3%`` for a space that matched every candidate to a target."""
    if not isinstance(budget, dict):
        return None
    for metric in ("flops", "params"):
        if budget.get(metric) is not None:
            try:
                target = format_count(parse_count(budget[metric]))
            except ValueError:
                return None
            return f"{metric} {target} within {float(budget.get('tolerance', 0.02)):.0%}"
    return None


def read_results(path: Path) -> pd.DataFrame:
    """The results table, checked (`coatsearch.results.read_table`); an empty file is a
    study with no trials yet."""
    try:
        return read_table(path)
    except TableError as exc:
        raise ReportError(str(exc)) from None


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory, or raise `ReportError` naming what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: expected a run directory (runs/<study>/), got a file")
    table_path = run_dir / "results.csv"
    if not table_path.exists():
        raise ReportError(f"{table_path}: no results table; run the study first (coatsearch run SPACE.yaml)")
    return Run(run_dir, read_study(run_dir), read_results(table_path))


def resolve_column(table: pd.DataFrame, name: str) -> str:
    """A column of the table by its name, or a sampled parameter's name without ``param.``."""
    if name in table.columns:
        return name
    if f"param.{name}" in table.columns:
        return f"param.{name}"
    params = [c for c in table.columns if c.startswith("param.")]
    choices = ", ".join(["layout", "status", "image_size", "seed", *params])
    raise ReportError(f"--color-by {name}: no such column in the results table; expected one of {choices}")


def is_categorical(values: pd.Series) -> bool:
    """Text, or numbers with few distinct values (seeds, multipliers on a grid)."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    return values.dropna().nunique() <= MAX_CATEGORIES


def label(value: Any) -> str:
    """How one group value is written in legends: ``0.5``, ``2``, ``C-C-T-T``."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def group_labels(table: pd.DataFrame, column: str) -> pd.Series:
    """The legend label of every row, for a categorical column."""
    return table[column].map(label) if len(table) else pd.Series(dtype=str)


def group_order(table: pd.DataFrame, column: str) -> list[str]:
    """Group labels in a stable order: numbers numerically, text alphabetically."""
    values = table[column].dropna().unique().tolist()
    try:
        values = sorted(values)
    except TypeError:
        values = sorted(values, key=str)
    order = [label(v) for v in values]
    return order + (["n/a"] if table[column].isna().any() else [])


def colors_for(groups: list[str]) -> dict[str, str]:
    return {group: PALETTE[i % len(PALETTE)] for i, group in enumerate(groups)}


def parse_band(text: str | None) -> float | tuple[float, float] | None:
    """``0.1`` (a fraction either side of the median FLOPs) or ``28M:36M`` (absolute)."""
    if text is None:
        return None
    expected = f"--flop-band {text}: expected a fraction such as 0.1, or LOW:HIGH such as 28M:36M"
    try:
        if ":" in text:
            low, high = (parse_count(part) for part in text.split(":", 1))
            if not 0 <= low < high:
                raise ValueError
            return low, high
        fraction = float(text)
    except ValueError:
        raise ReportError(expected) from None
    if not 0 < fraction < 1:
        raise ReportError(expected)
    return fraction
