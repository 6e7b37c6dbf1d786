"""`Domain`: the values one searched parameter may take, as a space writes them (``choices``
or a ``low``..``high`` range), and the forms the samplers take them in: every value for a
grid, a draw through an Optuna trial, Optuna's distribution for a recorded trial.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Domain(BaseModel):
    """The values one parameter may take: ``choices`` or a ``low``..``high`` range."""

    # infinities and NaN are refused wherever a space has a number
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    choices: list[Any] | None = None
    # int | float keeps what was written: ``low: 1`` is an integer range, ``low: 1.0`` a float one
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Domain:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices: the choice list is empty")
            if self.low is not None or self.high is not None:
                raise ValueError("choices: give choices or low/high, not both")
        elif self.low is None or self.high is None:
            raise ValueError("expected `choices: [...]` or both `low` and `high`")
        elif self.low > self.high:
            raise ValueError(f"low: {self.low} is above high {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError("low: a log range needs low > 0")
        elif self.step is not None and self.step <= 0:
            raise ValueError(f"step: must be positive, got {self.step}")
        elif self.step is not None and self.log:
            raise ValueError("step: a log range cannot have a step")
        return self

    @property
    def is_int(self) -> bool:
        """An integer range: low, high (and step) all written as integers."""
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1)
        )

    def grid_size(self) -> int:
        """How many values `grid_values` gives, computed without listing them."""
        if self.choices is not None:
            return len(self.choices)
        if not self.is_int or self.low is None or self.high is None:
            raise ValueError("a range needs integer low/high/step to be enumerated by the grid sampler")
        return len(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def grid_values(self) -> list[Any]:
        """Every value, for the grid sampler (ranges need an integer step)."""
        if self.choices is not None:
            return list(self.choices)
        if not self.is_int or self.low is None or self.high is None:
            raise ValueError("a range needs integer low/high/step to be enumerated by the grid sampler")
        return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def distribution(self) -> Any:
        """The domain as Optuna's distribution (categorical, integer or float): what a
        finished trial is recorded against when it is replayed into a sampler."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.is_int and self.low is not None and self.high is not None:
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return FloatDistribution(float(self.low or 0), float(self.high or 0), step=self.step, log=self.log)

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw a value through an Optuna trial: the domain's `distribution`, drawn by
        Optuna (`suggest`)."""
        return suggest(trial, name, self.distribution())


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """Draw ``name`` from an Optuna distribution through a running trial (define-by-run,
    as `optuna.Study.optimize` hands trials out): the trial method for the distribution's
    kind, given the distribution's own bounds, step and scale."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)
