"""What a search optimises: the metrics an objective may name, and the one `Direction`
type every part derives its own form from (Optuna's ``maximize``, Ray's ``max``, a sign
for "higher is better", a worst value for a metric not measured yet).

Apart from the space's schema so that reading a run's objectives (the report, `best`)
needs neither the network nor the search stack.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

METRICS = ("val_acc", "flops", "params", "latency_ms")


class Direction(StrEnum):
    """Which way a metric is better: ``max`` or ``min`` (Ray's spelling, and the YAML's)."""

    MAX = "max"
    MIN = "min"

    @property
    def optuna(self) -> Literal["maximize", "minimize"]:
        """Optuna's spelling, for `optuna.create_study(directions=...)`."""
        return "maximize" if self is Direction.MAX else "minimize"

    @property
    def sign(self) -> float:
        """1 for ``max``, -1 for ``min``: ``sign * value`` is "higher is better"."""
        return 1.0 if self is Direction.MAX else -1.0

    @property
    def worst(self) -> float:
        """The value reported for a metric not measured (yet): never ideal to a searcher.
        Every maximised metric here is a fraction (an accuracy), so 0 is its worst."""
        return 0.0 if self is Direction.MAX else 1e30

    @classmethod
    def of(cls, metric: str) -> Direction:
        """A metric's usual direction: accuracies up; losses, counts and latency down."""
        return cls.MAX if metric.endswith("acc") else cls.MIN


class Objective(BaseModel):
    """One objective: a metric and ``max`` or ``min`` (its usual direction when not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["val_acc", "flops", "params", "latency_ms"]
    mode: Direction | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # "val_acc" or "val_acc:max" as shorthand
        if isinstance(value, str):
            metric, _, mode = value.partition(":")
            return {"metric": metric, **({"mode": mode} if mode else {})}
        return value

    @property
    def direction(self) -> Direction:
        return self.mode or Direction.of(self.metric)
