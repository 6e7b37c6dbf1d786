"""One results table per study: one row per trial, written as trials finish.

Both backends produce the same columns, so everything downstream (Pareto fronts,
reports, studies) reads only this table. Sampled parameters appear as ``param.<name>``
columns; ``history`` holds the per-epoch metrics as JSON; ``spec`` the trained network
as JSON.

A run directory (``runs/<study>/``) holds:
  space.yaml     the space as resolved (overrides applied)
  results.csv    this table
  pareto.csv     the non-dominated full-fidelity trials
  study.db       the Optuna storage (optuna backend), or ray/ (the Ray Tune experiment)
  run.log        what the run printed
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from coatsearch.pareto import non_dominated

COLUMNS = [
    "trial", "status", "fidelity", "max_fidelity", "layout", "blocks", "channels", "image_size",
    "flops", "params", "val_acc", "val_loss", "train_acc", "train_loss", "gap", "test_acc",
    "latency_ms", "images_per_s", "wall_time", "seed", "node", "worker", "reason",
    "budget_note", "spec", "history",
]
#: Statuses of trials that ran to their end (they count towards a study's trial budget).
FINISHED = ("complete", "stopped", "diverged", "failed")


def count_finished(frame: pd.DataFrame) -> int:
    """Trials that ran to their end (see `FINISHED`)."""
    return int(frame["status"].isin(FINISHED).sum()) if len(frame) else 0


def write_table(rows: Iterable[dict[str, Any]], path: Path) -> pd.DataFrame:
    """Write rows atomically (temp file + rename): a crash never leaves half a table."""
    frame = to_frame(rows)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return frame


def upsert_rows(path: Path, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert or replace rows (by trial number) in the table at ``path``; return all rows."""
    existing: dict[int, dict[str, Any]] = {}
    if path.exists():
        for record in read_table(path).to_dict("records"):
            existing[int(record["trial"])] = {k: v for k, v in record.items() if not _missing(v)}
    for row in rows:
        existing[int(row["trial"])] = row
    merged = list(existing.values())
    write_table(merged, path)
    return merged


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    param_cols = sorted({k for row in rows for k in row if k.startswith("param.")})
    frame = pd.DataFrame(rows, columns=COLUMNS + param_cols)
    return frame.sort_values("trial", kind="stable").reset_index(drop=True) if len(frame) else frame


def read_table(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
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
    return frame[(frame["status"] == "complete") & full]


def pareto_front(frame: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The non-dominated full-fidelity trials for ``[(metric, "max"|"min"), ...]``."""
    candidates = ranked(frame).dropna(subset=[m for m, _ in objectives])
    if candidates.empty:
        return candidates
    mask = non_dominated(candidates[[m for m, _ in objectives]].to_numpy(), [d == "max" for _, d in objectives])
    first = objectives[0]
    return candidates[mask].sort_values(first[0], ascending=first[1] == "min")


def history_of(row: pd.Series) -> list[dict[str, Any]]:
    text = row.get("history")
    return json.loads(text) if isinstance(text, str) and text else []
