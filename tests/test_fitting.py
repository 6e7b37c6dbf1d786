"""Which configurations' networks fit their training images, and at which round."""

from __future__ import annotations

import json

import pandas as pd

from coatsearch.analysis import Design
from coatsearch.analysis.fitting import first_fit_round, fit_table
from coatsearch.studies import fit_markdown


def _row(trial: int, layout: str, curve: list[float], status: str = "complete") -> dict:
    history = [{"epoch": i + 1, "train_eval_acc": acc, "val_acc": 0.5} for i, acc in enumerate(curve)]
    return {"trial": trial, "status": status, "fidelity": len(curve), "max_fidelity": 4, "param.layout": layout,
            "param.seed": trial, "train_eval_acc": curve[-1], "history": json.dumps(history)}


def _design(table: pd.DataFrame) -> Design:
    return Design.of(table, {"layout": {"choices": ["slow", "fast"]}, "seed": {"choices": [0, 1, 2, 3, 4]}}, "grid")


def test_the_first_round_at_the_target_is_read_from_the_probe_whether_or_not_it_stayed_there():
    history = [{"epoch": 1, "train_eval_acc": 0.5}, {"epoch": 2, "train_eval_acc": 0.985},
               {"epoch": 3, "train_eval_acc": 0.97}, {"epoch": 4, "train_eval_acc": 0.99}]
    assert first_fit_round(json.dumps(history)) == 2
    assert first_fit_round(history, target=0.99) == 4
    assert first_fit_round(history, target=0.995) is None
    assert first_fit_round([{"epoch": 1}]) is None and first_fit_round("") is None


def test_each_configuration_says_how_many_fitted_and_when_in_the_spaces_order():
    table = pd.DataFrame([
        _row(0, "fast", [0.9, 0.99, 1.0, 1.0]),
        _row(1, "fast", [0.95, 0.97, 0.98, 0.99]),
        _row(2, "slow", [0.5, 0.7, 0.9, 0.97]),
        _row(3, "slow", [0.5, 0.8, 0.99, 0.99]),
        _row(4, "slow", [0.9, 0.99], status="stopped"),  # stopped early: not fully trained, left out
    ])
    frame = fit_table(table, _design(table))
    assert list(frame["param.layout"]) == ["slow", "fast"]
    slow, fast = frame.iloc[0], frame.iloc[1]
    assert (slow["n"], slow["fitted"], fast["n"], fast["fitted"]) == (2, 1, 2, 2)
    assert slow["train_eval_acc_min"] == 0.97 and fast["train_eval_acc_mean"] == (1.0 + 0.99) / 2
    assert (fast["round_min"], fast["round_median"], fast["round_max"]) == (2, 2.5, 3)
    assert (slow["round_min"], slow["round_max"]) == (3, 3)
    text = fit_markdown(frame, steps_per_round=40)
    assert "| slow | 2 | 1 of 2 | 98.00% (97.00%) | 120 (120–120) |" in text
    assert "| fast | 2 | 2 of 2 | 99.50% (99.00%) | 100 (80–120) |" in text


def test_a_configuration_none_of_whose_trials_got_there_says_never_in_epochs_without_fixed_steps():
    table = pd.DataFrame([_row(0, "slow", [0.5, 0.6, 0.7, 0.8]), _row(1, "fast", [0.9, 0.99, 0.99, 0.99])])
    text = fit_markdown(fit_table(table, _design(table)), steps_per_round=None)
    assert "| slow | 1 | 0 of 1 | 80.00% (80.00%) | never |" in text
    assert "first at 98%: epochs" in text and "| fast | 1 | 1 of 1 | 99.00% (99.00%) | 2 (2–2) |" in text
    assert fit_markdown(fit_table(table.iloc[0:0], _design(table)), None).startswith("No fully trained trial")
