"""The parts a `coatsearch.search.rows.TrialRow` is made of: the number types its fields
check (`Fraction`, `Whole`), a network's summary (`NetSummary`, shared by a candidate, a dry
run and a row), one epoch of a history (`Epoch`), the earlier names a stored record may use,
and the key of a set of sampled values (`point_key`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from coatsearch.spec import NetSpec

#: A fraction of a set of images: an accuracy, in [0, 1].
Fraction = Annotated[float, Field(ge=0, le=1)]


def _whole(value: Any) -> Any:
    """A finite number as a whole one, cut toward zero as ``int()`` does (a table's counts
    may have been written as floats); anything else is left to the field's check."""
    return int(value) if isinstance(value, float) and math.isfinite(value) else value


#: A count read from a table: a whole number, floats cut to one.
Whole = Annotated[int, BeforeValidator(_whole)]
#: A measured number as it was recorded (an int stays an int, so records read back unchanged).
Number = int | float

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


def current_names(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """``record`` with its keys under their current names (`legacy_renames`); ``record``
    itself when it has no earlier name (the common case, checked first)."""
    if _OLD_NAMES.isdisjoint(record) and ("gap" not in record or "train_eval_acc" in record):
        return record
    renames = legacy_renames(record)
    return {renames.get(key, key): value for key, value in record.items()}


_OLD_NAMES = frozenset(LEGACY_NAMES.values())


def point_key(sampled: Mapping[str, Any]) -> str:
    """The canonical JSON of a set of sampled values: equal for equal configurations (``2``
    and ``2.0`` are one value, as they are to the sampler)."""
    return json.dumps({k: plain_value(sampled[k]) for k in sorted(sampled)}, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class NetSummary:
    """A network as a results row, a dry run and a candidate describe it: its layout, blocks
    and channels per stage (comma-separated), input size, FLOPs and parameter count."""

    layout: str
    blocks: str
    channels: str
    image_size: int
    flops: int
    params: int

    @classmethod
    def of(cls, spec: NetSpec, flops: int, params: int) -> NetSummary:
        return cls(layout=spec.layout, blocks=",".join(str(s.blocks) for s in spec.stages),
                   channels=",".join(str(s.channels) for s in spec.stages), image_size=spec.image_size,
                   flops=flops, params=params)

    def columns(self) -> dict[str, Any]:
        """The summary as `TrialRow` fields (the same names)."""
        return dataclasses.asdict(self)


class Epoch(BaseModel):
    """One epoch of a trial's history (`coatsearch.train.metrics.EpochMetrics` as recorded):
    numbers, or None where one was not finite. Keys it does not know are kept, and earlier
    names are read under their current ones."""

    model_config = ConfigDict(frozen=True, extra="allow")

    epoch: int | None = None
    train_loss_running: Number | None = None
    train_acc_running: Number | None = None
    train_eval_loss: Number | None = None
    train_eval_acc: Number | None = None
    val_loss: Number | None = None
    val_acc: Number | None = None
    gap: Number | None = None
    images_per_s: Number | None = None
    wall_time: Number | None = None
    lr: Number | None = None
    epoch_s: Number | None = None
    epoch_cpu_s: Number | None = None

    @model_validator(mode="before")
    @classmethod
    def _current_names(cls, data: Any) -> Any:
        return current_names(data) if isinstance(data, Mapping) else data

    def get(self, metric: str) -> Any:
        """A metric by name (None where the epoch has none): what a scheduler compares."""
        return getattr(self, metric, None)

    def record(self) -> dict[str, Any]:
        """The epoch as it was given (keys it was given, in order)."""
        return self.model_dump(exclude_unset=True)


def plain_value(value: Any) -> Any:
    """numpy scalars from a table cell as Python numbers; whole floats as ints."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
