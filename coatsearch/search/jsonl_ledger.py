"""A run's ledger as a file: ``RUN_DIR/ledger.jsonl``, one `TrialRow` as JSON a line.

Each trial that ends is appended at once and flushed to disk, so a finished trial is never
lost, after kill -9 too; the results table is rebuilt from the ledger. A line a crash cut
short is passed over when read and dropped before the next append; any other line that is
not a row is refused (`LedgerError`), never passed over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from coatsearch.errors import CoatsearchError, first_line, os_reason
from coatsearch.search.rows import TrialRow

LEDGER = "ledger.jsonl"


class LedgerError(CoatsearchError):
    """A ledger line that is not a trial row: the table is rebuilt from the ledger, so a
    row passed over would drop a finished trial from it and run the trial again."""


def read_rows(path: Path, *, strict: bool = False) -> list[TrialRow]:
    """The rows of a JSON-lines file, by trial number (a later line for the same number
    wins). A last line without its newline (a write cut short by a crash) is passed over,
    unless ``strict`` (a committed file such as a table's rows, which nothing cut short);
    any other line that is not a trial row is a `LedgerError` naming it."""
    rows: dict[int, TrialRow] = {}
    if not path.exists():
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the ledger ({os_reason(exc)})") from None
    lines = text.split("\n")
    if strict and lines[-1].strip():
        raise LedgerError(f"{path}: line {len(lines)} is cut short (no newline ends the file)")
    for number, line in enumerate(lines[:-1], 1):  # [-1]: "" or a line cut short
        if not line.strip():
            continue
        try:
            row = TrialRow.from_json(line)
        except (ValueError, KeyError, TypeError) as exc:
            why = f"no {exc.args[0]} field" if isinstance(exc, KeyError) else first_line(exc)
            raise LedgerError(f"{path}: line {number} is not a trial row ({why}); restore it, "
                              "or delete the line to run that trial again") from None
        rows[row.trial] = row
    return [rows[k] for k in sorted(rows)]


def read_ledger(run_dir: Path) -> list[TrialRow]:
    """The rows appended to a run's ledger so far (`read_rows`)."""
    return read_rows(run_dir / LEDGER)


def append_ledger(run_dir: Path, row: TrialRow, *, sync: bool = True) -> None:
    """Append one row and flush it (to disk too with ``sync``: a trial that trained for
    minutes survives a power cut; a replayed one is cheap to replay again); a line a crash
    cut short is dropped first, so the row starts a line of its own."""
    with open(run_dir / LEDGER, "a+b") as handle:
        _drop_cut_line(handle)
        handle.write((row.to_json() + "\n").encode())
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def add_warm(run_dir: Path, rows: list[TrialRow]) -> None:
    """Append an earlier run's trials (``warm_start``) once: nothing when the ledger holds
    any already (a resumed run). Numbered after the ledger's rows, in one write."""
    held = read_ledger(run_dir)
    if not rows or any(row.warm_start for row in held):
        return
    first = max((row.trial for row in held), default=-1) + 1
    text = "".join(row.replace(trial=first + i).to_json() + "\n" for i, row in enumerate(rows))
    with open(run_dir / LEDGER, "a+b") as handle:
        _drop_cut_line(handle)
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())


def _drop_cut_line(handle: BinaryIO) -> None:
    """Truncate the file after its last newline."""
    end = pos = handle.seek(0, os.SEEK_END)
    while pos > 0:
        start = max(0, pos - 4096)
        handle.seek(start)
        newline = handle.read(pos - start).rfind(b"\n")
        if newline >= 0:
            if start + newline + 1 < end:
                handle.truncate(start + newline + 1)
            return
        pos = start
    handle.truncate(0)
