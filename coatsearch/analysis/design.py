"""What a results table is an experiment on: its factors, their order, and whether they
were crossed.

A grid (the studies' sampler) crosses every factor with every other, so a factor's values
are compared within each combination of the others: the other factors are held fixed and
cannot explain the difference. A sampled search (TPE, NSGA-II, random) crosses nothing, so
a factor's values are compared over all trials, the others varying as they fell.

A numeric factor with more than `MAX_LEVELS` values (a continuous ``train.lr``: one value
per trial) is compared by quantile bins (`BINS` of them, each holding about as many
trials), in their order, rather than value by value (`Design.binned`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: The repeat axis: never a factor.
SEED = "param.seed"
#: A numeric factor with more distinct values than this is compared by bins.
MAX_LEVELS = 8
#: How many quantile bins such a factor is cut into (fewer where values repeat).
BINS = 5


@dataclass(frozen=True)
class Design:
    """``factors``: the ``param.`` columns compared, in the space's order; ``orders``: each
    factor's values as the space lists them; ``crossed``: a grid design."""

    factors: tuple[str, ...] = ()
    orders: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    crossed: bool = False
    #: each binned factor's bin edges, ascending (`bin_edges`)
    bins: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, table: pd.DataFrame, params: Mapping[str, Any] | None = None, sampler: str | None = None) -> Design:
        """The design of ``table`` given the space's ``params`` mapping (name -> domain with
        optional ``choices``) and sampler: every parameter but the seed that takes more
        than one value in the table, the space's first, then any other ``param.`` column."""
        params = dict(params or {})
        named = [f"param.{name}" for name in params if f"param.{name}" in table]
        named += [c for c in table.columns if c.startswith("param.") and c not in named]
        factors = tuple(c for c in named if c != SEED and table[c].nunique(dropna=True) > 1)
        orders: dict[str, tuple[Any, ...]] = {}
        for name, domain in params.items():
            choices = domain.get("choices") if isinstance(domain, Mapping) else getattr(domain, "choices", None)
            if choices:
                orders[f"param.{name}"] = tuple(choices)
        bins = {f: edges for f in factors if (edges := bin_edges(table[f])) is not None}
        orders.update({f: bin_labels(edges) for f, edges in bins.items()})
        return cls(factors, orders, sampler == "grid", bins)

    def binned(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with each binned factor's values replaced by their bin's label
        (``0.001–0.003``): what effects, comparisons and importances compare."""
        if not self.bins:
            return table
        table = table.copy()
        for factor, edges in self.bins.items():
            cut = pd.cut(pd.to_numeric(table[factor], errors="coerce"), list(edges), labels=list(bin_labels(edges)),
                         include_lowest=True)
            table[factor] = cut.astype(object).where(cut.notna(), None)
        return table

    def order(self, table: pd.DataFrame, factor: str) -> list[Any]:
        """The factor's values present in ``table``: the space's order, then the rest sorted."""
        present = list(table[factor].dropna().unique())
        listed = [v for v in self.orders.get(factor, ()) if any(_same(v, p) for p in present)]
        rest = sorted((p for p in present if not any(_same(p, v) for v in listed)), key=_sort_key)
        return [next(p for p in present if _same(v, p)) for v in listed] + rest

    def sort(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table``'s rows by configuration, each factor's values in `order` (a missing
        value last), ties kept as they were: every table of configurations lists them alike."""
        keys = {f"_order_{factor}": table[factor].map({v: i for i, v in enumerate(self.order(table, factor))})
                for factor in self.factors}
        if not keys:
            return table
        return table.assign(**keys).sort_values(list(keys), kind="stable", na_position="last").drop(columns=list(keys))

    def ordered(self, table: pd.DataFrame, factor: str) -> bool:
        """A factor whose values are numbers (scale, split, a width): neighbours compare, and
        all values at once in a trend; bins too, in their order."""
        return factor in self.bins or pd.api.types.is_numeric_dtype(table[factor].dropna())


def bin_edges(values: pd.Series) -> tuple[float, ...] | None:
    """Quantile edges cutting a numeric factor's values into up to `BINS` bins of about
    equal counts; None for a factor compared value by value (text, or `MAX_LEVELS` values
    or fewer)."""
    numbers = values.dropna()
    if not pd.api.types.is_numeric_dtype(numbers) or pd.api.types.is_bool_dtype(numbers):
        return None
    if numbers.nunique() <= MAX_LEVELS:
        return None
    edges = np.unique(np.quantile(numbers.to_numpy(float), np.linspace(0, 1, BINS + 1)))
    return tuple(float(e) for e in edges) if len(edges) >= 3 else None


def bin_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """Each bin as ``low–high`` (both ends included in the first, the high end in the rest)."""
    return tuple(f"{lo:.3g}–{hi:.3g}" for lo, hi in zip(edges, edges[1:]))


def _same(a: Any, b: Any) -> bool:
    """Equal as values: a YAML ``1`` and a CSV ``1.0`` are the same choice."""
    try:
        return bool(a == b) or float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _sort_key(value: Any) -> tuple[float, str]:
    try:
        return (float(value), "")
    except (TypeError, ValueError):
        return (0.0, str(value))
