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

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coatsearch.search.rows import COLUMNS, TrialRow, current_names, legacy_renames
from coatsearch.status import FINISHED, Status

__all__ = ["COLUMNS", "FINISHED", "count_finished", "history_of", "ranked", "read_table",
           "table_rows", "to_frame", "write_table"]


def count_finished(frame: pd.DataFrame) -> int:
    """Trials that ran to their end (see `coatsearch.status.FINISHED`)."""
    return int(frame["status"].isin(list(FINISHED)).sum()) if len(frame) else 0


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
    """Write rows atomically (temp file + rename): a crash never leaves half a table."""
    frame = to_frame(rows)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return frame


def read_table(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    frame = frame.rename(columns=legacy_renames(frame.columns))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame


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
    return [current_names(epoch) for epoch in json.loads(text)] if isinstance(text, str) and text else []
