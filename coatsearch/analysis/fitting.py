"""Whether each configuration's networks fit their training images, and when they did.

A difference of validation accuracy speaks of generalization only between networks that
have fitted what they were trained on: one still short of its training set is still
learning, and at equal steps a ranking of such networks is largely one of optimisation
speed. For each configuration this gives its fully trained trials' final eval-mode
training accuracy (``train_eval_acc``: mean and lowest), how many of them reached `FIT`,
and the round at which each first did, read from its per-round training probe; a study
multiplies the rounds by its steps per round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from coatsearch.analysis.design import Design
from coatsearch.results import ranked

#: The eval-mode training accuracy at which a network is said to fit its training images.
FIT = 0.98

#: The columns of `fit_table`, after the configuration's factors.
FIT_COLUMNS = ["n", "fitted", "train_eval_acc_mean", "train_eval_acc_min", "round_median", "round_min",
               "round_max"]


def first_fit_round(history: Any, target: float = FIT) -> int | None:
    """The first round (``epoch``) whose training probe reached ``target``, from a results
    row's ``history`` (JSON text or a list of epoch mappings); None where none did or no
    round measured it."""
    if isinstance(history, str):
        history = json.loads(history) if history.strip() else []
    if not isinstance(history, Sequence):
        return None
    for epoch in history:
        accuracy = epoch.get("train_eval_acc")
        if accuracy is not None and accuracy >= target:
            return int(epoch["epoch"])
    return None


def fit_table(table: pd.DataFrame, design: Design, target: float = FIT) -> pd.DataFrame:
    """One row per configuration (the design's factors, in the space's order of values):
    its fully trained trials, how many ended at ``target`` or above, their final eval-mode
    training accuracy (mean, lowest), and the median, first and last round at which those
    that reached ``target`` first did (NaN where none did, or no round was recorded)."""
    factors = list(design.factors)
    rows = design.binned(ranked(table))
    if rows.empty or "train_eval_acc" not in rows:
        return pd.DataFrame(columns=[*factors, *FIT_COLUMNS])
    rounds = [first_fit_round(h, target) for h in rows.get("history", pd.Series([None] * len(rows)))]
    rows = rows.assign(_round=pd.array(rounds, dtype="Float64"))
    for factor in factors:
        order = {value: i for i, value in enumerate(design.order(rows, factor))}
        rows = rows.assign(**{f"_order_{factor}": rows[factor].map(order)})
    if factors:
        rows = rows.sort_values([f"_order_{f}" for f in factors], kind="stable")
        groups = rows.groupby(factors, sort=False)
    else:
        groups = rows.groupby(lambda _: 0)
    found = []
    for key, part in groups:
        values = key if isinstance(key, tuple) else (key,)
        reached = part["_round"].dropna().astype(float)
        found.append({
            **({f: v for f, v in zip(factors, values)}),
            "n": len(part),
            "fitted": int((part["train_eval_acc"] >= target).sum()),
            "train_eval_acc_mean": float(part["train_eval_acc"].mean()),
            "train_eval_acc_min": float(part["train_eval_acc"].min()),
            "round_median": float(reached.median()) if len(reached) else float("nan"),
            "round_min": float(reached.min()) if len(reached) else float("nan"),
            "round_max": float(reached.max()) if len(reached) else float("nan"),
        })
    return pd.DataFrame(found, columns=[*factors, *FIT_COLUMNS])
