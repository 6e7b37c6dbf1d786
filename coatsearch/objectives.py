"""What a search optimises: the metrics an objective may name and their default directions.

Apart from the space's schema so that reading a run's objectives (the report, `best`)
needs neither the network nor the search stack.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

METRICS = ("val_acc", "flops", "params", "latency_ms")
DEFAULT_MODE = {"val_acc": "max", "flops": "min", "params": "min", "latency_ms": "min"}


class Objective(BaseModel):
    """One objective: a metric and ``max`` or ``min`` (its default when not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["val_acc", "flops", "params", "latency_ms"]
    mode: Literal["max", "min"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # "val_acc" or "val_acc:max" as shorthand
        if isinstance(value, str):
            metric, _, mode = value.partition(":")
            return {"metric": metric, **({"mode": mode} if mode else {})}
        return value

    @property
    def direction(self) -> str:
        return self.mode or DEFAULT_MODE[self.metric]
