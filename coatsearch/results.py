"""One results table per study: one row per trial, rebuilt from the run's ledger.

Both backends produce `TrialRow`s, so everything downstream (`coatsearch.analysis`, reports,
studies) reads only this table. Sampled parameters appear as ``param.<name>`` columns;
``point`` keys a configuration; ``history`` holds the per-epoch metrics as JSON; ``spec``
the trained network as JSON.

A run directory (``runs/<study>/``) holds:
  space.yaml     the space as resolved (overrides applied, base written out)
  results.csv    this table (rebuilt from the ledger on every run, so a damaged copy heals)
  pareto.csv     the non-dominated full-fidelity trials
  study.db       the Optuna storage (optuna backend), or ledger.jsonl and tune/ (ray backend)
  run.log        what the run printed
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coatsearch.errors import CoatsearchError, first_line, os_reason
from coatsearch.files import read_bytes
from coatsearch.search.rows import COLUMNS, RowError, TrialRow, current_names, legacy_renames, parse_record
from coatsearch.status import FINISHED, Status

__all__ = ["COLUMNS", "FINISHED", "TableError", "count_finished", "history_of", "own_trials", "ranked", "read_table",
           "table_rows", "to_frame", "write_table"]

class TableError(CoatsearchError):
    """A results table that is not one coatsearch writes (a hand edit, a cut copy): the
    message names the file, and the row and column at fault."""


def count_finished(frame: pd.DataFrame) -> int:
    """The run's own trials that ran to their end (see `coatsearch.status.FINISHED`)."""
    frame = own_trials(frame)
    return int(frame["status"].isin(list(FINISHED)).sum()) if len(frame) else 0


def own_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The run's own trials: those an earlier run handed over (``warm_start``) left out,
    for what the run itself spent and finished."""
    if "warm_start" not in frame or frame.empty:
        return frame
    return frame[frame["warm_start"].isna()]


def table_rows(rows: Iterable[TrialRow]) -> list[TrialRow]:
    """What the table shows of a ledger: one row per trial number, and an interrupted
    trial only while its configuration has not run to its end since."""
    by_number = {row.trial: row for row in rows}
    done = {row.point for row in by_number.values() if row.status != Status.INTERRUPTED}
    return [row for _, row in sorted(by_number.items())
            if row.status != Status.INTERRUPTED or row.point not in done]


def to_frame(rows: Iterable[TrialRow]) -> pd.DataFrame:
    records = [row.to_record() for row in table_rows(rows)]
    param_cols = sorted({k for record in records for k in record if k.startswith("param.")})
    return pd.DataFrame(records, columns=[*COLUMNS, *param_cols])


def write_table(rows: Iterable[TrialRow], path: Path) -> pd.DataFrame:
    """Write rows atomically (temp file + rename): a crash never leaves half a table.

    Returns the table as `read_table` reads it, parsed from the text just written (not
    read back from disk): a run's own views and a later ``coatsearch report`` see one table."""
    text = to_frame(rows).to_csv(index=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TableError(f"{path}: cannot write the results table ({os_reason(exc)})") from None
    return _parse(io.StringIO(text), path)


def _text_columns() -> dict[str, type]:
    """The columns `TrialRow` holds text in, and ``point``: read as text, so that a value
    that looks like a number stays what was written (a Ray node id such as ``4e81234...``
    is no float, let alone infinity)."""
    hints = typing.get_type_hints(TrialRow)
    text = [f.name for f in dataclasses.fields(TrialRow)
            if f.name in COLUMNS and set(typing.get_args(hints[f.name]) or [hints[f.name]]) <= {str, type(None)}]
    return {name: str for name in (*text, "point")}


TEXT_COLUMNS = _text_columns()

#: The largest results table read (a million trials with their histories fit well within it).
MAX_TABLE_BYTES = 4 * 1024**3


def read_table(path: Path) -> pd.DataFrame:
    """The results table at ``path``, checked cell by cell (`check_table`); an empty file
    is a table with no trials yet. `TableError` names what is wrong."""
    data = read_bytes(path, TableError, "results table", limit=MAX_TABLE_BYTES)
    return _parse(io.BytesIO(data), path)


def _parse(source: io.BytesIO | io.StringIO, path: Path) -> pd.DataFrame:
    """A results table's text (a file's bytes, or text just written) as the checked frame."""
    try:
        frame = pd.read_csv(source, dtype=TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=COLUMNS)
    except OSError as exc:
        raise TableError(f"{path}: cannot read the results table ({os_reason(exc)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: not a readable results table ({first_line(exc)})") from None
    frame = frame.rename(columns=legacy_renames(frame.columns))
    check_table(frame, path)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame


def check_table(frame: pd.DataFrame, path: Path) -> None:
    """Every cell as `write_table` writes it: a header with ``trial`` and ``status``, and
    each row one `TrialRow` (its fields' types are the checks: `rows.parse_record`), one
    row per trial number. Columns it does not know are left alone."""
    missing = [c for c in ("trial", "status") if c not in frame]
    if missing:
        raise TableError(f"{path}: no {missing[0]} column; expected the header coatsearch writes "
                         f"({','.join(COLUMNS[:4])},...) on the first line")
    seen: dict[int, int] = {}
    for i, record in enumerate(frame.to_dict("records")):
        try:
            trial = parse_record(record).trial
        except RowError as exc:
            raise TableError(f"{path}: row {i + 1}, {exc.column}: {exc}") from None
        if trial in seen:
            raise TableError(f"{path}: row {i + 1}, trial: trial {trial} is in row {seen[trial] + 1} too")
        seen[trial] = i


def ranked(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that may be ranked: complete and trained to full fidelity.

    Early-stopped trials carry low-budget metrics; ranking them beside full runs would put
    cheap, half-trained networks on the front.
    """
    if frame.empty:
        return frame
    full = frame["fidelity"] >= frame["max_fidelity"]
    return frame[(frame["status"] == Status.COMPLETE) & full]


def history_of(row: pd.Series) -> list[dict[str, Any]]:
    """The row's per-epoch metrics, under their current names."""
    text = row.get("history")
    return [dict(current_names(epoch)) for epoch in json.loads(text)] if isinstance(text, str) and text else []
