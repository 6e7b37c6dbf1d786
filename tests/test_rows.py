"""The results schema (`TrialRow`) against every committed table, and its checks."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pandas as pd
import pytest

from coatsearch.results import read_table
from coatsearch.search.jsonl_ledger import read_rows
from coatsearch.search.rows import COLUMNS, Epoch, NetSummary, RowError, TrialRow

ROOT = Path(__file__).resolve().parent.parent
TABLES = sorted(p for name in ("results.csv", "pareto.csv", "top.csv") for p in ROOT.glob(f"studies/*/{name}"))
LEDGERS = sorted(ROOT.glob("tables/*/*.jsonl"))


def test_committed_files_are_found():
    assert len(TABLES) >= 6 and len(LEDGERS) >= 2


@pytest.mark.parametrize("path", TABLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_results_table_reads_and_rewrites_unchanged(path: Path):
    table = read_table(path)  # every row checked against TrialRow's fields
    raw = pd.read_csv(path)
    for record in raw.to_dict("records"):
        row = TrialRow.from_record(record)
        again = row.to_record()
        assert again["params"] == record["params"] and again["point"] == record["point"]
        assert all(k in again for k in record if k.startswith("param."))
        for name in ("spec", "phases", "history"):  # JSON only at the edge, text as it was
            if isinstance(record.get(name), str):
                assert again[name] == record[name]
    assert len(table) == len(raw)


@pytest.mark.parametrize("path", LEDGERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_table_of_networks_reads_and_rewrites_unchanged(path: Path):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = read_rows(path)
    assert len(rows) == len({json.loads(line)["trial"] for line in lines})
    by_trial = {row.trial: row for row in rows}
    for line in lines:
        record = json.loads(line)
        row = by_trial[record["trial"]]
        assert all(isinstance(e, Epoch) for e in row.history or ())
        again = row.to_record()
        # each cell as committed (JSON text byte for byte); columns added since are empty
        assert json.dumps({k: again[k] for k in record}) == json.dumps(record)
        assert all(again[k] is None for k in again.keys() - record.keys())


def test_the_parameter_count_and_the_sampled_values_have_their_own_names():
    row = TrialRow(trial=0, status="complete", sampled={"split": 2}, params=1234)
    record = row.to_record()
    assert record["params"] == 1234 and record["param.split"] == 2 and "sampled" not in record
    assert row.objective("params") == 1234.0
    with pytest.raises(TypeError, match="sampled"):
        TrialRow(trial=0, status="complete", params={"split": 2})  # type: ignore[arg-type]


def test_a_network_summary_is_the_rows_network_columns():
    net = NetSummary(layout="C-T", blocks="1,2", channels="8,16", image_size=32, flops=10, params=5)
    row = TrialRow(trial=0, status="complete").described(net)
    assert {k: getattr(row, k) for k in net.columns()} == net.columns()
    assert set(net.columns()) <= set(COLUMNS)
    # the row holds each summary column with the summary's type (empty until described)
    row_types, net_types = typing.get_type_hints(TrialRow), typing.get_type_hints(NetSummary)
    assert all(row_types[name] == net_types[name] | None for name in net_types)


def test_history_is_typed_in_a_row_and_json_in_its_record():
    row = TrialRow(trial=0, status="complete", history=(Epoch(epoch=1, val_acc=0.5, train_acc=0.4),))
    assert row.history is not None and row.history[0].train_acc_running == 0.4  # an earlier name, read as now
    text = row.to_record()["history"]
    assert json.loads(text) == [{"epoch": 1, "val_acc": 0.5, "train_acc_running": 0.4}]
    assert TrialRow.from_record(row.to_record()) == row
    assert row.at_epoch(row.history[-1]).val_acc == 0.5


@pytest.mark.parametrize(("cell", "value", "why"), [
    ("trial", -1, "-1 is not a trial number"),
    ("fidelity", "two", "'two' is not a number"),
    ("val_acc", "high", "'high' is not a number"),
    ("test_acc", 1.5, "1.5 is not a fraction in [0, 1]"),
    ("history", "[{\"val_acc\": \"x\"}]", "not the JSON list"),
    ("spec", "[]", "not the JSON dict"),
    ("status", "excellent", "'excellent' is not a status"),
])
def test_a_records_cells_are_checked_by_the_fields_types(cell, value, why):
    with pytest.raises(RowError, match=why.replace("[", r"\[").replace("]", r"\]")) as caught:
        TrialRow.from_record({"trial": 0, "status": "complete", cell: value})
    assert caught.value.column == cell


def test_counts_written_as_floats_read_as_whole_numbers():
    row = TrialRow.from_record({"trial": 0.0, "status": "complete", "flops": 1234.7, "fidelity": 2.0})
    assert (row.trial, row.flops, row.fidelity) == (0, 1234, 2)
    with pytest.raises(RowError, match="not a trial number"):
        TrialRow.from_record({"trial": 0.5, "status": "complete"})
