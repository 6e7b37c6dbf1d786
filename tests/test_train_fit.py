"""Which configurations' networks fit their training images, and by which round."""

from __future__ import annotations

import json

import pandas as pd

from coatsearch.analysis import Design
from coatsearch.analysis.train_fit import NOT_RECORDED, first_fit_round, train_fit
from coatsearch.studies import train_fit_markdown


def _row(trial: int, layout: str | None, curve: list[float], status: str = "complete", history: bool = True) -> dict:
    rounds = [{"epoch": i + 1, "train_eval_acc": acc, "val_acc": 0.5} for i, acc in enumerate(curve)]
    return {"trial": trial, "status": status, "fidelity": len(curve), "max_fidelity": 4, "param.layout": layout,
            "param.seed": trial, "train_eval_acc": curve[-1], "history": json.dumps(rounds) if history else None}


def _design(table: pd.DataFrame) -> Design:
    return Design.of(table, {"layout": {"choices": ["slow", "fast"]}, "seed": {"choices": list(range(9))}}, "grid")


def test_the_first_round_at_the_target_is_read_from_the_probe_whether_or_not_it_stayed_there():
    history = [{"epoch": 1, "train_eval_acc": 0.5}, {"epoch": 2, "train_eval_acc": 0.985},
               {"epoch": 3, "train_eval_acc": 0.97}, {"epoch": 4, "train_eval_acc": 0.99}]
    assert first_fit_round(json.dumps(history)) == 2
    assert first_fit_round(history, target=0.99) == 4
    assert first_fit_round(history, target=0.995) is None
    assert first_fit_round([{"epoch": 1, "val_acc": 0.5}]) == NOT_RECORDED
    assert first_fit_round("") == NOT_RECORDED and first_fit_round(None) == NOT_RECORDED


def test_each_configuration_says_how_many_fitted_and_by_when_in_the_spaces_order():
    table = pd.DataFrame([
        _row(0, "fast", [0.9, 0.99, 1.0, 1.0]),
        _row(1, "fast", [0.95, 0.97, 0.98, 0.99]),
        _row(2, "slow", [0.5, 0.99, 0.9, 0.97]),  # touched 98% but ended below: not fitted, not timed
        _row(3, "slow", [0.5, 0.8, 0.99, 0.99]),
        _row(4, "slow", [0.9, 0.99], status="stopped"),  # stopped early: not fully trained, left out
    ])
    frame = train_fit(table, _design(table))
    assert list(frame["param.layout"]) == ["slow", "fast"]
    slow, fast = frame.iloc[0], frame.iloc[1]
    assert (slow["n"], slow["fitted"], fast["n"], fast["fitted"]) == (2, 1, 2, 2)
    assert slow["train_eval_acc_min"] == 0.97 and fast["train_eval_acc_mean"] == (1.0 + 0.99) / 2
    assert (fast["round_min"], fast["round_median"], fast["round_max"]) == (2, 2.5, 3)
    assert (slow["with_rounds"], slow["round_min"], slow["round_max"]) == (1, 3, 3)
    text = train_fit_markdown(frame, steps_per_round=40)
    assert "| slow | 2 | 1 of 2 | 98.00% (97.00%) | 120 (120–120) |" in text
    assert "| fast | 2 | 2 of 2 | 99.50% (99.00%) | 100 (80–120) |" in text
    assert "| fast | 2 | 2 of 2 | 99.50% (99.00%) | 2.5 (2–3) |" in train_fit_markdown(frame, steps_per_round=None)


def test_never_fitted_unmeasured_unrecorded_and_missing_values_each_say_so():
    table = pd.DataFrame([
        _row(0, "slow", [0.5, 0.6, 0.7, 0.8]),
        _row(1, "fast", [0.9, 0.99, 0.99, 0.99], history=False),  # fitted, rounds not recorded
        _row(2, None, [0.9, 0.99, 0.99, 0.99]),  # a trial without the factor's value: its own row
        {**_row(3, "slow", [0.5, 0.6, 0.7, 0.8]), "train_eval_acc": float("nan")},  # no final probe
    ])
    frame = train_fit(table, _design(table))
    assert len(frame) == 3 and frame["param.layout"].isna().sum() == 1
    text = train_fit_markdown(frame, steps_per_round=None)
    assert "first there by epoch" in text
    assert "| slow | 2 | 0 of 1 | 80.00% (80.00%) | – |" in text
    assert "| fast | 1 | 1 of 1 | 99.00% (99.00%) | not recorded |" in text
    assert "| (missing) | 1 | 1 of 1 | 99.00% (99.00%) | 2 (2–2) |" in text
    unmeasured = train_fit(table.iloc[[3]], _design(table))
    assert "| slow | 1 | 0 of 0 | – | – |" in train_fit_markdown(unmeasured, None)
    assert train_fit_markdown(train_fit(table.iloc[0:0], _design(table)), None).startswith("No fully trained trial")
