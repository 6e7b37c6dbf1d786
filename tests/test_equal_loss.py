"""Comparisons at equal training loss: each trial's validation accuracy where its training
probe's loss fell to a level both configurations reached, compared between them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from coatsearch.analysis import Design
from coatsearch.analysis.equal_loss import Curve, crossing, equal_loss, loss_levels
from coatsearch.studies import EQUAL_LOSS_END, EQUAL_LOSS_START, equal_loss_markdown


def test_a_crossing_is_interpolated_in_log_loss_between_the_rounds_around_it():
    curve = Curve(losses=(1.0, 0.25, 0.1), accuracies=(0.5, 0.7, 0.8))
    assert crossing(curve, 0.5) == pytest.approx(0.6)  # halfway from 1.0 to 0.25 in log loss
    assert crossing(curve, 0.25) == pytest.approx(0.7)
    assert crossing(curve, 2.0) is None  # below it before the first measurement: unknown
    assert crossing(curve, 0.05) is None  # never reached


def test_levels_lie_where_every_curve_was_measured_above_and_reached_below():
    fast = Curve((0.5, 0.1, 0.01), (0.8, 0.9, 0.92))
    slow = Curve((1.5, 0.9, 0.4), (0.5, 0.7, 0.8))
    levels = loss_levels([fast, slow], 3)
    assert len(levels) == 3 and all(0.4 < level < 0.5 for level in levels)  # off both ends of the shared range
    assert levels == sorted(levels, reverse=True)
    assert math.log(0.5 / levels[0]) == pytest.approx(math.log(0.5 / 0.4) / 4)  # evenly in log loss
    assert loss_levels([Curve((0.3, 0.1), (0.9, 0.95)), slow]) == []  # no loss both reached after a first round


def test_rounds_whose_loss_cannot_sit_on_a_log_scale_are_left_out():
    curve = Curve.of([{"train_eval_loss": float("nan"), "val_acc": 0.5}, {"train_eval_loss": 0.0, "val_acc": 0.6},
                      {"train_eval_loss": 0.8, "val_acc": 0.7}, {"train_eval_loss": 0.4, "val_acc": 0.8}])
    assert curve == Curve((0.8, 0.4), (0.7, 0.8))
    assert Curve.of([{"train_eval_loss": float("inf"), "val_acc": 0.5}]) is None


def _table(generalization: dict[str, float], speed: dict[str, float], seeds: int = 3, rounds: int = 8,
           noise: float = 0.004) -> pd.DataFrame:
    """Trials whose validation accuracy is a layout's ``generalization`` minus the log of its
    training loss, and whose loss falls at the layout's ``speed`` per round."""
    rng = np.random.default_rng(0)
    rows = []
    for layout in generalization:
        for seed in range(seeds):
            history = []
            for epoch in range(1, rounds + 1):
                loss = 2.0 * math.exp(-speed[layout] * epoch)
                acc = generalization[layout] - 0.05 * math.log(loss) + rng.normal(0, noise)
                history.append({"epoch": epoch, "train_eval_loss": loss, "val_acc": acc})
            rows.append({"trial": len(rows), "status": "complete", "fidelity": rounds, "max_fidelity": rounds,
                         "param.layout": layout, "param.seed": seed, "val_acc": history[-1]["val_acc"],
                         "val_images": 100_000, "history": json.dumps(history)})
    return pd.DataFrame(rows)


def test_a_faster_fitting_layout_is_not_ahead_at_equal_training_loss():
    table = _table({"fast": 0.6, "slow": 0.6}, {"fast": 0.6, "slow": 0.3})
    design = Design.of(table, {"layout": {"choices": ["fast", "slow"]}}, "grid")
    final = table.groupby("param.layout")["val_acc"].mean()
    assert final["fast"] - final["slow"] > 0.05  # at equal steps the fast one leads
    frame = equal_loss(table, design)
    assert len(frame) == 3 and (frame["difference"].abs() < 0.01).all()
    assert frame["verdict"].str.startswith("not resolved").all()


def test_a_layout_that_generalizes_better_is_ahead_at_every_level():
    table = _table({"better": 0.65, "worse": 0.6}, {"better": 0.3, "worse": 0.6})
    design = Design.of(table, {"layout": {"choices": ["better", "worse"]}}, "grid")
    frame = equal_loss(table, design)
    assert len(frame) == 3 and ((frame["difference"] - 0.05).abs() < 0.01).all()
    assert (frame["verdict"] == "better > worse").all() and (frame["p_holm"] < 0.05).all()
    assert frame["family"].nunique() == 1 and (frame["level"].diff().dropna() < 0).all()
    text = equal_loss_markdown(frame)
    assert text.count("| layout | all trials | better vs worse |") == 3 and "Holm" in text
    assert "3 comparisons in one family." in text


def test_a_study_readme_with_the_markers_gets_the_section(tmp_path):
    from coatsearch.studies import replace_between

    readme = f"intro\n{EQUAL_LOSS_START}\nold\n{EQUAL_LOSS_END}\nrest\n"
    table = _table({"a": 0.6, "b": 0.6}, {"a": 0.5, "b": 0.5})
    frame = equal_loss(table, Design.of(table, {"layout": {"choices": ["a", "b"]}}, "grid"))
    text = replace_between(readme, EQUAL_LOSS_START, EQUAL_LOSS_END, equal_loss_markdown(frame))
    assert "old" not in text and "| layout | all trials | a vs b |" in text and text.endswith("rest\n")
    assert equal_loss_markdown(frame.iloc[0:0]).startswith("Nothing to compare at equal training loss")
