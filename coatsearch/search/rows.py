"""`TrialRow`: what one trial reports, the same on every backend, and the results table's schema.

A row is built once per trial (`TrialRow.begin`), grows as the trial goes (the network
described by a `NetSummary`, trained epoch by epoch into a history of `Epoch`s, measured)
and is stored as a flat record: a results table row, an Optuna user attribute, a line of
a ledger. Its fields are the table's columns, in order, and their types are the checks a
table read from disk gets (`parse_record`, through pydantic's `TypeAdapter`): whole
numbers where a field is an ``int``, fractions in [0, 1] where it is a `Fraction`, JSON
of the field's structure in the ``spec``, ``phases`` and ``history`` cells, which are
Python values in a row and JSON text only in a record. Sampled values (``sampled``) become
``param.<name>`` columns; ``point`` is them as canonical JSON, the key that says two
trials ran the same configuration (a grid point). ``params`` is the network's parameter
count, as the objectives and budgets call it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Annotated, Any

import pydantic
import pydantic_core
from pydantic import Field, TypeAdapter

from coatsearch.search.row_parts import (
    LEGACY_NAMES,
    Epoch,
    Fraction,
    NetSummary,
    Whole,
    current_names,
    legacy_renames,
    plain_value,
    point_key,
)
from coatsearch.status import Status

__all__ = ["COLUMNS", "EPOCH_FIELDS", "JSON_FIELDS", "LEGACY_NAMES", "Epoch", "Fraction", "NetSummary", "RowError",
           "TrialRow", "Whole", "current_names", "legacy_renames", "parse_record", "point_key"]


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome. ``fidelity`` counts the epochs trained of ``max_fidelity``;
    ``history`` holds the per-epoch metrics; ``spec`` the trained network (``to_dict``)."""

    trial: Annotated[int, Field(ge=0)]
    status: Status
    _: KW_ONLY
    #: the sampled values (``param.<name>`` columns), not a column of their own
    sampled: Mapping[str, Any] = field(default_factory=dict)
    fidelity: Whole = 0
    max_fidelity: Whole = 0
    layout: str | None = None
    blocks: str | None = None
    channels: str | None = None
    image_size: Whole | None = None
    flops: Whole | None = None
    #: the parameter count
    params: Whole | None = None
    val_acc: Fraction | None = None
    val_loss: float | None = None
    #: Eval-mode accuracy of the final weights on a fixed training subset; gap = it - val_acc.
    train_eval_acc: Fraction | None = None
    gap: float | None = None
    #: Running means over the last epoch's training batches (train mode, weights moving).
    train_acc_running: Fraction | None = None
    train_loss_running: float | None = None
    test_acc: Fraction | None = None
    latency_ms: float | None = None
    images_per_s: float | None = None
    wall_time: float | None = None
    #: When the trial began and ended, in seconds on the run's clock: the replay backend's
    #: simulated clock (`coatsearch.search.replay`); empty for trials that really trained.
    clock_start: float | None = None
    clock_end: float | None = None
    #: The learning-curve scheduler's last prediction of the final early-stopping metric
    #: (`coatsearch.search.curves`), its standard deviation and the epoch it was made at.
    curve_prediction: float | None = None
    curve_sd: float | None = None
    curve_epoch: Whole | None = None
    seed: Whole | None = None
    train_images: Whole | None = None  # the training images the trial trained on
    val_images: Whole | None = None  # the validation set's size: the binomial part of an interval
    test_images: Whole | None = None
    node: str | None = None
    worker: str | None = None
    #: Data-parallel replicas the trial trained on (None: one process).
    workers: Whole | None = None
    reason: str | None = None
    #: Where a trial handed over from an earlier run (``warm_start``) ran: ``RUN_DIR#N``
    #: (empty for the run's own trials). Such a row informs the sampler and the analysis and
    #: is never run, counted towards ``trials`` or counted as this run's compute.
    warm_start: str | None = None
    budget_note: str | None = None
    #: seconds spent building the candidate, reading data, training, evaluating
    phases: Mapping[str, float] | None = field(default=None, metadata={"json": (", ", ": ")})
    #: Which validation / test images the final network got right (`coatsearch.perimage`),
    #: for comparisons image by image.
    val_correct: str | None = None
    test_correct: str | None = None
    spec: Mapping[str, Any] | None = field(default=None, metadata={"json": (",", ":")})
    history: tuple[Epoch, ...] | None = field(default=None, metadata={"json": (", ", ": ")})
    #: the JSON text of the structured fields, as read or once written (a record is written
    #: again each time the table is; `replace` starts a row without it)
    _text: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.params, Mapping):
            raise TypeError("TrialRow.params is the parameter count; the sampled values are `sampled`")

    @classmethod
    def begin(cls, trial: int, sampled: Mapping[str, Any], max_fidelity: int, node: str | None = None) -> TrialRow:
        """A row for a trial that is starting (status `INTERRUPTED` until it ends)."""
        host = socket.gethostname()
        return cls(trial=trial, status=Status.INTERRUPTED, sampled=dict(sampled), max_fidelity=max_fidelity,
                   node=node or host, worker=f"{host}:{os.getpid()}")

    def replace(self, **changes: Any) -> TrialRow:
        if "status" in changes:
            changes["status"] = Status(changes["status"])
        return dataclasses.replace(self, **changes)

    def described(self, net: NetSummary) -> TrialRow:
        """The row with the network's summary columns."""
        return self.replace(**net.columns())

    def at_epoch(self, epoch: Epoch | None) -> TrialRow:
        """The row with the metrics it takes from an epoch (its last, or the one it stopped
        at): the fields a row and an epoch share, but the epoch's own time."""
        return self.replace(**{name: None if epoch is None else getattr(epoch, name) for name in EPOCH_FIELDS})

    @property
    def point(self) -> str:
        return point_key(self.sampled)

    @property
    def finished(self) -> bool:
        """The run's own trial ended (a warm-start row is an earlier run's: never counted)."""
        return self.status.finished and self.warm_start is None

    def objective(self, metric: str) -> float:
        """A metric's value (a column's), NaN where the trial has none."""
        value = getattr(self, metric)
        return float("nan") if value is None else float(value)

    # ------------------------------------------------------------------ records
    def to_record(self) -> dict[str, Any]:
        """The flat, JSON-able form: the table's columns, then ``param.<name>``."""
        record: dict[str, Any] = {}
        for name in COLUMNS:
            value = self.point if name == "point" else getattr(self, name)
            if value is not None and name in JSON_FIELDS:
                value = self._text.get(name) or self._text.setdefault(name, _json_text(name, value))
            record[name] = value
        record["status"] = str(self.status)
        record.update({f"param.{k}": v for k, v in self.sampled.items()})
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrialRow:
        """The row of a flat record (a table row or a stored attribute); missing or NaN
        cells are empty. Raises `RowError` naming the first cell that is not as written."""
        return parse_record(record)

    def to_json(self) -> str:
        return json.dumps(self.to_record(), default=str)

    @classmethod
    def from_json(cls, text: str) -> TrialRow:
        return cls.from_record(json.loads(text))


# ----------------------------------------------------------------------------- the schema
class RowError(ValueError):
    """A record's cell that is not what `TrialRow` holds there: ``column`` and why."""

    def __init__(self, column: str, why: str) -> None:
        super().__init__(why)
        self.column = column


#: Fields held as JSON text in a record, with the separators they are written with.
JSON_FIELDS: dict[str, tuple[str, str]] = {f.name: f.metadata["json"] for f in dataclasses.fields(TrialRow)
                                           if "json" in f.metadata}
#: The table's columns, in order (``param.<name>`` columns follow): every field but the
#: sampled values, with ``point`` after ``status``.
COLUMNS: tuple[str, ...] = tuple(
    name for f in dataclasses.fields(TrialRow) if f.name != "sampled" and not f.name.startswith("_")
    for name in ((f.name, "point") if f.name == "status" else (f.name,)))
#: The metrics a row takes from an epoch (`TrialRow.at_epoch`).
EPOCH_FIELDS = tuple(name for name in Epoch.model_fields if name in COLUMNS and name not in ("epoch", "wall_time"))


#: The fields a record's cells fill (``point`` is derived, ``sampled`` gathered from ``param.*``).
_FIELDS = frozenset(COLUMNS) - {"point"}


@functools.cache
def _adapter() -> TypeAdapter[TrialRow]:
    return TypeAdapter(TrialRow)


def parse_record(record: Mapping[str, Any]) -> TrialRow:
    """A flat record (as `TrialRow.to_record` writes it, or a table's row) as its row, each
    cell checked and coerced by the field's type: JSON cells parsed, numpy numbers made
    Python ones, empty cells (None, NaN) left to the field's default, earlier names read
    under their current ones. `RowError` names the first cell at fault."""
    record = current_names(record)
    data: dict[str, Any] = {}
    sampled: dict[str, Any] = {}
    for name, cell in record.items():
        value = _item(cell)
        if value is None:
            continue
        if name in _FIELDS:
            data[name] = _json_cell(name, value) if name in JSON_FIELDS else value
        elif name.startswith("param."):
            sampled[name[6:]] = plain_value(value)
    for key in ("trial", "status"):
        if key not in data:
            raise RowError(key, _why(key, {"type": "missing"}, None) if key in record else f"no {key} field")
    data["sampled"] = sampled
    try:
        row = _adapter().validate_python(data)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        column = str(error["loc"][0]) if error["loc"] else "?"
        raise RowError(column, _why(column, error, data.get(column))) from None
    row._text.update({name: record[name] for name in JSON_FIELDS if name in data})
    return row


def _json_cell(name: str, text: Any) -> Any:
    """A structured field's cell parsed (pydantic-core's JSON parser: the same values as the
    standard library's, in a third of the time a table's specs take to read)."""
    kind = "dict" if name != "history" else "list"
    try:
        value = pydantic_core.from_json(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict if kind == "dict" else list):
        raise RowError(name, f"not the JSON {kind} coatsearch writes")
    return value


def _why(column: str, error: Any, value: Any) -> str:
    """A one-line reason for a pydantic error on ``column``, as a table's reader words it."""
    kind = error["type"]
    shown = "an empty cell" if value is None else f"{value:g}" if isinstance(value, float | int) else repr(value)
    if column == "trial":
        return f"{shown} is not a trial number (a whole number from 0)"
    if column == "status":
        return f"{shown} is not a status; expected one of {', '.join(sorted(str(s) for s in Status))}"
    if column in JSON_FIELDS:
        where = ".".join(str(p) for p in error["loc"][1:3])
        return f"not the JSON {'list' if column == 'history' else 'dict'} coatsearch writes ({where}: {error['msg']})"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{value:g} is not a fraction in [0, 1]"
    if kind in ("int_from_float", "int_parsing") and isinstance(value, float | int):
        return f"{value!r} is not a whole number"
    if kind.startswith(("int_", "float_")):
        return f"{value!r} is not a number"
    return f"{value!r}: {error['msg']}"


def _json_text(name: str, value: Any) -> str:
    """A structured field's value as its record cell: JSON text, as it has always been written."""
    if name == "history":
        value = [epoch.record() for epoch in value]
    return json.dumps(dict(value) if isinstance(value, Mapping) else value, separators=JSON_FIELDS[name])


def _item(value: Any) -> Any:
    """A cell as a Python value: numpy scalars as Python ones, NaN as None."""
    if value is None or type(value) in _PLAIN_TYPES:
        return value
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


#: Cell types that are already Python values (a float still needs its NaN check).
_PLAIN_TYPES = frozenset({str, int, bool})
