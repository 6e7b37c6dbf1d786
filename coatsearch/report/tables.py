"""The report's tables: the Pareto set, the top trials and the failures.

Each table is a plain DataFrame of results-table columns (raw numbers, for CSV), which
`formatted` turns into text for people (HTML, Markdown). The HTML version sorts by
clicking a header, with a few lines of inline script and no library.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from coatsearch.analysis.ranking import pareto_set, top_trials
from coatsearch.report.data import ReportError, Run
from coatsearch.status import Status
from coatsearch.units import FLOPS_NOTE, format_count

#: Columns shown, in order, when the table has them and they are not all empty.
SHOWN = [
    "trial", "status", "layout", "blocks", "channels", "image_size", "flops", "params",
    "latency_ms", "val_acc", "train_eval_acc", "gap", "test_acc", "fidelity", "wall_time", "warm_start",
]
HEADERS = {
    "trial": "trial", "status": "status", "layout": "layout", "blocks": "blocks",
    "channels": "channels", "image_size": "image", "flops": "FLOPs (mult-adds)",
    "params": "params", "latency_ms": "latency (ms)", "val_acc": "val acc", "train_eval_acc": "train acc (eval)",
    "gap": "gap (train-val)", "test_acc": "test acc", "fidelity": "epochs run",
    "wall_time": "time (s)", "reason": "reason", "warm_start": "from an earlier run",
}
#: The failures table leads with why: the reason comes third, where it is seen first.
FAILURE_COLUMNS = ["trial", "status", "reason", "layout", "blocks", "channels", "flops", "params", "fidelity"]


def _percent(value: float) -> str:
    return f"{value:.2%}"


FORMATS: dict[str, Callable[[Any], str]] = {
    "flops": format_count,
    "params": format_count,
    "val_acc": _percent,
    "train_eval_acc": _percent,
    "test_acc": _percent,
    "gap": lambda v: f"{v * 100:+.2f} pp",
    "latency_ms": lambda v: f"{v:.2f}",
    "wall_time": lambda v: f"{v:.0f}",
}


def _repeats(frame: pd.DataFrame, param: str, columns: list[str]) -> bool:
    """``param.layout`` says nothing new beside a ``layout`` column with the same values."""
    name = param.removeprefix("param.")
    return name in columns and bool((frame[param].astype(str) == frame[name].astype(str)).all())


def shown_columns(frame: pd.DataFrame, columns: Sequence[str] = SHOWN) -> list[str]:
    """Of ``columns``, those with values, then the sampled parameters that add information."""
    shown = [c for c in columns if c in frame and frame[c].notna().any()]
    params = sorted(c for c in frame.columns if c.startswith("param."))
    return shown + [c for c in params if not _repeats(frame, c, shown)]


def failures(run: Run) -> pd.DataFrame:
    """Trials that failed, diverged or could not be built, with why."""
    table = run.table
    return table[table["status"].isin([Status.FAILED, Status.DIVERGED, Status.INFEASIBLE])].reset_index(drop=True)


def _integers(column: pd.Series) -> pd.Series:
    """Whole numbers stored as floats (a column with gaps) back to integers: 32, not 32.0."""
    values = column.dropna()
    if pd.api.types.is_float_dtype(column) and len(values) and (values % 1 == 0).all():
        return column.astype("Int64")
    return column


def view(frame: pd.DataFrame, columns: Sequence[str] = SHOWN) -> pd.DataFrame:
    """The shown columns of a table, raw values (what CSV output holds)."""
    return frame[shown_columns(frame, columns)].apply(_integers)


def format_cell(column: str, value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "-"
    if column in FORMATS:
        return FORMATS[column](float(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Text for people: counts as 4.17G, accuracies as percentages, headers spelled out."""
    text = pd.DataFrame({HEADERS.get(c, c): [format_cell(c, v) for v in frame[c]] for c in frame.columns})
    return text


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (for papers and READMEs)."""
    text = formatted(frame)
    if text.empty:
        return "(none)"
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) else "left" for c in frame.columns]
    return text.to_markdown(index=False, disable_numparse=True, colalign=align)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def _sort_key(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def html_table(frame: pd.DataFrame, table_id: str) -> str:
    """A sortable HTML table: cells show formatted text and sort by their raw value."""
    if frame.empty:
        return '<p class="empty">none</p>'
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    head = "".join(
        f'<th data-type="{"num" if numeric[c] else "str"}" title="sort by {html.escape(c)}">'
        f"{html.escape(HEADERS.get(c, c))}</th>"
        for c in frame.columns
    )
    rows = []
    for record in frame.to_dict("records"):
        cells = "".join(
            f'<td data-v="{html.escape(_sort_key(record[c]))}">{html.escape(format_cell(c, record[c]))}</td>'
            for c in frame.columns
        )
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


#: The tables ``coatsearch report --format csv|markdown`` prints, by name.
TABLE_NAMES = ("pareto", "top", "failures")
FORMATS_TEXT = ("csv", "markdown")


def named_tables(run: Run, top: int = 10) -> dict[str, tuple[str, pd.DataFrame]]:
    """Title and shown columns of each table, by name."""
    objectives = ", ".join(f"{m} ({d})" for m, d in run.study.objectives)
    return {
        "pareto": (f"Pareto set of {run.study.name}: {objectives}", view(pareto_set(run.table, run.study.objectives))),
        "top": (f"Top {top} trials of {run.study.name} by validation accuracy", view(top_trials(run.ranked, top))),
        "failures": (f"Failed, diverged and infeasible trials of {run.study.name}", view(failures(run), FAILURE_COLUMNS)),
    }


def render_text(run: Run, fmt: str, which: str = "all", top: int = 10) -> str:
    """The tables as CSV (raw values) or Markdown (formatted), for terminals and papers.

    One table prints alone; ``all`` prints each under a ``#`` title line (CSV) or a
    heading (Markdown).
    """
    if fmt not in FORMATS_TEXT:
        raise ReportError(f"--format {fmt}: expected html, csv or markdown")
    if which != "all" and which not in TABLE_NAMES:
        raise ReportError(f"--table {which}: expected {', '.join(TABLE_NAMES)} or all")
    chosen = named_tables(run, top)
    names = TABLE_NAMES if which == "all" else (which,)
    if fmt == "csv":
        if which != "all":
            return to_csv(chosen[which][1])
        return "\n".join(f"# {chosen[n][0]}\n{to_csv(chosen[n][1])}" for n in names)
    parts = [f"### {chosen[n][0]}\n\n{to_markdown(chosen[n][1])}\n" for n in names]
    return "\n".join(parts) + f"\n{FLOPS_NOTE}\n"


def comparisons_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Comparisons for people: differences in points, p to three figures."""
    shown = frame.copy()
    for column in ("difference", "se", "ci95_low", "ci95_high", "ci_simultaneous_low", "ci_simultaneous_high",
                   "detectable"):
        if column in frame:
            shown[column] = ["–" if pd.isna(v) else f"{v * 100:+.2f} pp" for v in frame[column]]
    for column in ("p", "p_holm"):
        shown[column] = [f"{v:.3g}" for v in frame[column]]
    for column, digits in (("t", 2), ("df", 1)):
        if column in frame:
            shown[column] = [f"{v:.{digits}f}" for v in frame[column]]
    # what a reader looks for first, in the first screenful at 1,400 px; the rest after
    lead = [c for c in COMPARISON_LEAD if c in shown]
    return shown[lead + [c for c in shown.columns if c not in lead]]


#: The comparisons' columns shown first: which values, the difference and the verdict.
COMPARISON_LEAD = ("factor", "metric", "first", "second", "trials", "difference", "ci95_low", "ci95_high", "p_holm",
                   "verdict", "test")
