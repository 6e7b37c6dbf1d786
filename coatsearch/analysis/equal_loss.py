"""Configurations compared at equal training loss: generalization in the paper's sense.

At equal training steps, a network that fits faster also scores higher on validation, so a
ranking at the end of training mixes optimisation speed with generalization. CoAtNet
defines generalization as the gap between training and evaluation at *equal training
loss*. Every round a trial measures its training probe (the network in eval mode on a
fixed share of its training images: ``train_eval_loss``) and its validation accuracy, so
each trial has a curve of validation accuracy against its training loss.

At a few loss levels that every trial of two configurations reached after its first
measurement (`loss_levels`: inside the range from the lowest first-round loss down to the
highest lowest loss of those trials, evenly in log loss), each trial's validation
accuracy where its probe loss first fell to the level (`crossing`: linear in log loss
between the two rounds around it) is compared between every pair of a factor's values (an ordered factor's too: there is no
trend over levels of training loss) within each combination of the other factors, pairs
that build the same networks left out as in `coatsearch.analysis.comparisons`: Welch over
seeds with the validation set's binomial bound (no round but the last keeps per-image
records). One factor's rows, over every level and combination, are one Holm family, as
a factor on one endpoint is in the comparisons; the rows are descriptive, and the levels
of one pair share their trials, so the correction is cautious there.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coatsearch.analysis import stats
from coatsearch.analysis.comparisons import (
    COLUMNS,
    RANGE,
    comparison_row,
    corrected_family,
    eval_size,
    same_networks,
    strata,
)
from coatsearch.analysis.design import Design
from coatsearch.results import ranked

#: How many loss levels each comparison is made at.
LEVELS = 3
#: The columns of `equal_loss`: the comparisons' own, and the loss level.
EQUAL_LOSS_COLUMNS = ["level", *COLUMNS]


@dataclass(frozen=True)
class Curve:
    """One trial's rounds: its training-probe loss and validation accuracy after each."""

    losses: tuple[float, ...]
    accuracies: tuple[float, ...]

    @classmethod
    def of(cls, history: Any) -> Curve | None:
        """From a results row's ``history`` (JSON text or a list of epoch mappings); None
        where no round measured both."""
        if isinstance(history, str):
            history = json.loads(history) if history.strip() else []
        if not isinstance(history, Sequence):
            return None
        rounds = [(float(e["train_eval_loss"]), float(e["val_acc"])) for e in history
                  if e.get("train_eval_loss") is not None and e.get("val_acc") is not None]
        # a loss that is not finite and positive has no place on a log scale
        rounds = [(loss, acc) for loss, acc in rounds if math.isfinite(loss) and loss > 0 and math.isfinite(acc)]
        if not rounds:
            return None
        return cls(tuple(loss for loss, _ in rounds), tuple(acc for _, acc in rounds))


def crossing(curve: Curve, level: float) -> float | None:
    """The validation accuracy where ``curve``'s training loss first fell to ``level``,
    linear in log loss between the rounds either side; None where it never did, or did so
    before its first measurement (what it scored there is not known)."""
    for i, loss in enumerate(curve.losses):
        if loss <= level:
            if i == 0:
                return curve.accuracies[0] if loss == level else None
            before, after = math.log(curve.losses[i - 1]), math.log(loss)  # before > log(level) >= after
            share = (before - math.log(level)) / (before - after)
            return curve.accuracies[i - 1] + share * (curve.accuracies[i] - curve.accuracies[i - 1])
    return None


def loss_levels(curves: Sequence[Curve], count: int = LEVELS) -> list[float]:
    """``count`` losses inside the range every curve reached after its first round, evenly
    in log loss and off both ends: the top end is the lowest first-round loss, the bottom
    the slowest curve's lowest loss (where it is read at the end of its schedule); none
    where the curves share no such range."""
    if not curves:
        return []
    high = min(c.losses[0] for c in curves)
    low = max(min(c.losses) for c in curves)
    if not low < high:
        return []
    return [float(x) for x in np.geomspace(high, low, count + 2)[1:-1]]


def equal_loss(table: pd.DataFrame, design: Design, count: int = LEVELS) -> pd.DataFrame:
    """Every pair of each factor's values compared on validation accuracy at equal
    training loss (columns `EQUAL_LOSS_COLUMNS`), within each combination of the other
    factors of a crossed design; empty where no trial recorded its rounds."""
    rows = ranked(table)
    if rows.empty or "history" not in rows:
        return pd.DataFrame(columns=EQUAL_LOSS_COLUMNS)
    rows = rows.assign(_curve=[Curve.of(h) if isinstance(h, (str, list)) else None for h in rows["history"]])
    rows = rows[rows["_curve"].notna()]
    found: list[dict[str, Any]] = []
    for factor in design.factors if not rows.empty else ():
        values = design.order(rows, factor)
        for within, part in strata(rows, design, factor):
            found += _at_levels(part, factor, within, values, count)
    if not found:
        return pd.DataFrame(columns=EQUAL_LOSS_COLUMNS)
    frame = pd.DataFrame(found)
    parts = [corrected_family(family) for _, family in frame.groupby("family", sort=False)]
    return pd.concat(parts)[EQUAL_LOSS_COLUMNS].sort_index()


def _at_levels(part: pd.DataFrame, factor: str, within: str, values: list[Any], count: int) -> list[dict[str, Any]]:
    """Each pair of ``values`` (but those that build the same networks) at the loss levels
    both reached (`loss_levels` of their curves)."""
    n_eval = eval_size(part, "val_acc")
    name = factor.removeprefix("param.")
    curves = {value: list(part.loc[part[factor] == value, "_curve"]) for value in values}
    rows = []
    for first, second in itertools.combinations(values, 2):
        if same_networks(part, factor, first, second):
            continue
        for level in loss_levels(curves[first] + curves[second], count):
            a = [acc for c in curves[first] if (acc := crossing(c, level)) is not None]
            b = [acc for c in curves[second] if (acc := crossing(c, level)) is not None]
            if len(a) < 2 or len(b) < 2:
                continue
            test = stats.welch(a, b, (n_eval, n_eval) if n_eval else None)
            row = comparison_row(factor, within, "val_acc", "pair", first, second, len(a), len(b), test,
                                 widest=RANGE["val_acc"])
            row["family"] = f"{name}: val_acc at equal training loss"
            row["role"] = "descriptive"
            rows.append({"level": level, **row})
    return rows
