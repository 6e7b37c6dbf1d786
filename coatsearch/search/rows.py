"""`TrialRow`: what one trial reports, the same on every backend.

A row is built once per trial (`TrialRow.begin`), grows through `replace` as the trial
goes (candidate described, trained, measured) and is stored as a flat record: a results
table row, an Optuna user attribute, a line of a Ray run's ledger. Sampled parameters
become ``param.<name>`` columns; ``point`` is the parameters as canonical JSON, the key
that says two trials ran the same configuration (a grid point).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import typing
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from coatsearch.status import Status

#: Field metadata of a column that holds a fraction of a set of images (in [0, 1]).
FRACTION = {"fraction": True}



#: Columns under their earlier names (tables and ledgers written before the rename).
LEGACY_NAMES = {"train_acc_running": "train_acc", "train_loss_running": "train_loss"}


def legacy_renames(names: Iterable[str]) -> dict[str, str]:
    """Earlier names among ``names`` (a table's columns, a record's or an epoch's keys) and
    what they are called now. ``train_acc``/``train_loss`` were the running figures, and a
    ``gap`` written before ``train_eval_acc`` existed came from them: ``gap_running``."""
    present = set(names)
    renames = {old: new for new, old in LEGACY_NAMES.items() if old in present and new not in present}
    if "gap" in present and "train_eval_acc" not in present:
        renames["gap"] = "gap_running"
    return renames


def current_names(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its keys under their current names (`legacy_renames`)."""
    renames = legacy_renames(record)
    return {renames.get(key, key): value for key, value in record.items()}


def point_key(params: Mapping[str, Any]) -> str:
    """The canonical JSON of a parameter set: equal for equal configurations (``2`` and
    ``2.0`` are one value, as they are to the sampler)."""
    return json.dumps({k: _plain(params[k]) for k in sorted(params)}, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome. ``fidelity`` counts the epochs trained of ``max_fidelity``;
    ``history`` holds the per-epoch metrics; ``spec`` the trained network (JSON)."""

    trial: int
    status: Status
    _: KW_ONLY
    #: the sampled values (``param.<name>`` columns), not a column of their own
    params: Mapping[str, Any] = field(default_factory=dict)
    fidelity: int = 0
    max_fidelity: int = 0
    layout: str | None = None
    blocks: str | None = None
    channels: str | None = None
    image_size: int | None = None
    flops: int | None = None
    n_params: int | None = None
    val_acc: float | None = field(default=None, metadata=FRACTION)
    val_loss: float | None = None
    #: Eval-mode accuracy of the final weights on a fixed training subset; gap = it - val_acc.
    train_eval_acc: float | None = field(default=None, metadata=FRACTION)
    gap: float | None = None
    #: Running means over the last epoch's training batches (train mode, weights moving).
    train_acc_running: float | None = field(default=None, metadata=FRACTION)
    train_loss_running: float | None = None
    test_acc: float | None = field(default=None, metadata=FRACTION)
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
    curve_epoch: int | None = None
    seed: int | None = None
    val_images: int | None = None  # the validation set's size: the binomial part of an interval
    test_images: int | None = None
    node: str | None = None
    worker: str | None = None
    #: Data-parallel replicas the trial trained on (None: one process).
    workers: int | None = None
    reason: str | None = None
    budget_note: str | None = None
    #: JSON: seconds spent building the candidate, reading data, training, evaluating
    phases: str | None = field(default=None, metadata={"json": dict})
    #: Which validation / test images the final network got right (`coatsearch.perimage`),
    #: for comparisons image by image.
    val_correct: str | None = None
    test_correct: str | None = None
    spec: str | None = field(default=None, metadata={"json": dict})
    history: str | None = field(default=None, metadata={"json": list})

    @classmethod
    def begin(cls, trial: int, params: Mapping[str, Any], max_fidelity: int, node: str | None = None) -> TrialRow:
        """A row for a trial that is starting (status `INTERRUPTED` until it ends)."""
        host = socket.gethostname()
        return cls(trial=trial, status=Status.INTERRUPTED, params=dict(params), max_fidelity=max_fidelity,
                   node=node or host, worker=f"{host}:{os.getpid()}")

    def replace(self, **changes: Any) -> TrialRow:
        if "status" in changes:
            changes["status"] = Status(changes["status"])
        return dataclasses.replace(self, **changes)

    @property
    def point(self) -> str:
        return point_key(self.params)

    @property
    def finished(self) -> bool:
        return self.status.finished

    def objective(self, metric: str) -> float:
        """A metric's value (``params`` is the parameter count)."""
        value = self.n_params if metric == "params" else getattr(self, metric)
        return float("nan") if value is None else float(value)

    # ------------------------------------------------------------------ records
    def to_record(self) -> dict[str, Any]:
        """The flat, JSON-able form: the table's columns, then ``param.<name>``."""
        record: dict[str, Any] = {}
        for name in COLUMNS:
            if name == "point":
                record[name] = self.point
            elif name == "params":
                record[name] = self.n_params
            else:
                value = getattr(self, name)
                record[name] = str(value) if isinstance(value, Status) else value
        record.update({f"param.{k}": v for k, v in self.params.items()})
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrialRow:
        """The row of a flat record (a table row or a stored attribute); missing or NaN
        cells become None."""
        record = current_names(record)

        def value(name: str) -> Any:
            v = record.get(name)
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        fields = {f.name for f in dataclasses.fields(cls)} - {"params", "n_params", "trial", "status", "_"}
        data = {name: value(name) for name in fields}
        for name in ("fidelity", "max_fidelity"):
            data[name] = int(data[name] or 0)
        for name in INTEGERS:
            if name in data and data[name] is not None:
                data[name] = int(data[name])
        params = {k[6:]: _plain(v) for k, v in record.items() if k.startswith("param.") and value(k) is not None}
        n_params = value("params")
        return cls(trial=int(record["trial"]), status=Status(record["status"]), params=params,
                   n_params=None if n_params is None else int(n_params), **data)

    def to_json(self) -> str:
        return json.dumps(self.to_record(), default=str)

    @classmethod
    def from_json(cls, text: str) -> TrialRow:
        return cls.from_record(json.loads(text))


# ----------------------------------------------------------------------------- the schema
def _schema() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], dict[str, type]]:
    """The results table's columns and their kinds, read off `TrialRow`'s fields: a field
    is a column (``n_params`` is called ``params``; the sampled ``params`` are the
    ``param.<name>`` columns), ``point`` follows ``status``; ``int``/``float`` fields are
    numeric, ``int`` ones whole, ``FRACTION`` ones in [0, 1], ``json`` ones hold that JSON type."""
    hints = typing.get_type_hints(TrialRow)
    columns, numeric, integers, fractions, json_columns = [], [], [], [], {}
    for f in dataclasses.fields(TrialRow):
        if f.name in ("params", "_"):
            continue
        name = "params" if f.name == "n_params" else f.name
        columns.append(name)
        if name == "status":
            columns.append("point")
        kinds = set(typing.get_args(hints[f.name])) - {type(None)} or {hints[f.name]}
        if kinds <= {int, float}:
            numeric.append(name)
            if kinds == {int}:
                integers.append(f.name)
        if f.metadata.get("fraction"):
            fractions.append(name)
        if "json" in f.metadata:
            json_columns[name] = f.metadata["json"]
    return tuple(columns), tuple(numeric), tuple(integers), tuple(fractions), json_columns


#: The table's columns, in order (``param.<name>`` columns follow); those holding numbers;
#: the fields read back as whole numbers; fractions of a set of images; JSON columns and
#: the type each holds. All derived from `TrialRow`'s fields (`_schema`).
COLUMNS, NUMERIC, INTEGERS, FRACTIONS, JSON_COLUMNS = _schema()


def _plain(value: Any) -> Any:
    """numpy scalars from a table cell as Python numbers; whole floats as ints."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
