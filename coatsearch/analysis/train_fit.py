"""Whether each configuration's networks fit their training images, and when they did.

A difference of validation accuracy speaks of generalization only between networks that
have fitted what they were trained on: one still short of its training set is still
learning, and at equal steps a ranking of such networks is largely one of optimisation
speed. For each configuration this gives its fully trained trials' final eval-mode
training accuracy (``train_eval_acc``: mean and lowest), how many ended at `FIT` or above,
and, for those, the first round at which their per-round training probe got there (an
upper bound at the resolution of the rounds); a study multiplies the rounds by its steps
per round.
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

#: The columns of `train_fit`, after the configuration's factors: trials, those with a final
#: eval-mode training accuracy, those at `FIT` or above at the end, that accuracy's mean and
#: lowest, and for the fitted ones with per-round probes, how many and their first rounds.
TRAIN_FIT_COLUMNS = ["n", "measured", "fitted", "train_eval_acc_mean", "train_eval_acc_min", "with_rounds",
                     "round_median", "round_min", "round_max"]

#: What `first_fit_round` says of a history that has no per-round probe.
NOT_RECORDED = -1


def first_fit_round(history: Any, target: float = FIT) -> int | None:
    """The first round (``epoch``) whose training probe reached ``target``, from a results
    row's ``history`` (JSON text or a list of epoch mappings); None where no round did, and
    `NOT_RECORDED` where no round measured it."""
    if isinstance(history, str):
        history = json.loads(history) if history.strip() else []
    if not isinstance(history, Sequence):
        return NOT_RECORDED
    probed = [epoch for epoch in history if epoch.get("train_eval_acc") is not None]
    if not probed:
        return NOT_RECORDED
    return next((int(epoch["epoch"]) for epoch in probed if epoch["train_eval_acc"] >= target), None)


def train_fit(table: pd.DataFrame, design: Design, target: float = FIT) -> pd.DataFrame:
    """One row per configuration (the design's factors, in the space's order of values;
    a missing value is a configuration of its own), with `TRAIN_FIT_COLUMNS`; the round
    columns are NaN where no fitted trial recorded its rounds."""
    factors = list(design.factors)
    rows = design.binned(ranked(table))
    if rows.empty or "train_eval_acc" not in rows:
        return pd.DataFrame(columns=[*factors, *TRAIN_FIT_COLUMNS])
    histories = rows["history"] if "history" in rows else pd.Series([None] * len(rows), index=rows.index)
    rows = rows.assign(_round=[first_fit_round(h, target) for h in histories])
    if factors:
        rows = design.sort(rows)
        groups = rows.groupby(factors, sort=False, dropna=False)
    else:
        groups = rows.groupby(lambda _: 0)
    found = []
    for key, part in groups:
        values = key if isinstance(key, tuple) else (key,)
        accuracy = part["train_eval_acc"].dropna()
        fitted = part[part["train_eval_acc"] >= target]
        rounds = pd.Series([r for r in fitted["_round"] if r is not None and r != NOT_RECORDED], dtype=float)
        found.append({
            **dict(zip(factors, values)),
            "n": len(part),
            "measured": len(accuracy),
            "fitted": len(fitted),
            "train_eval_acc_mean": float(accuracy.mean()) if len(accuracy) else float("nan"),
            "train_eval_acc_min": float(accuracy.min()) if len(accuracy) else float("nan"),
            "with_rounds": len(rounds),
            "round_median": float(rounds.median()) if len(rounds) else float("nan"),
            "round_min": float(rounds.min()) if len(rounds) else float("nan"),
            "round_max": float(rounds.max()) if len(rounds) else float("nan"),
        })
    return pd.DataFrame(found, columns=[*factors, *TRAIN_FIT_COLUMNS])
