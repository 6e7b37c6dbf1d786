"""The ``target`` scheduler: stop a trial once its metric reaches a set value.

What it is for: training each network until it fits (``metric: train_eval_acc``,
``target: 0.98``), or until it is good enough, and recording when that happened (the
trial's ``fidelity``, the epochs it ran). A pilot run with it finds the steps a layout
needs to fit its training set; the trials judge only themselves, so the order and the
number of trials change nothing.

A trial it stops is recorded ``stopped`` at the epoch it got there, and is not ranked (as
no stopped trial is: its learning rate had not decayed to its end, so its accuracies are
those of a network mid-schedule); a pilot's answer is each row's ``fidelity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coatsearch.objectives import Direction
from coatsearch.search.rungs import CONTINUE, Course, Verdict


class TargetStopper:
    """Stops a trial at the first epoch, from ``grace`` on, whose metric is at ``target`` or
    beyond it (at or above for a metric that rises, at or below for one that falls)."""

    def __init__(self, target: float, grace: int, direction: Direction = Direction.MAX) -> None:
        self.target, self.grace, self.sign = target, grace, direction.sign

    def judge(self, trial: Course, finished: Sequence[Course]) -> Verdict:
        value = trial.values[-1] if trial.values else None
        if value is None or trial.epochs < self.grace:
            return CONTINUE
        return Verdict(self.sign * value >= self.sign * self.target)


def target(early: Any, max_epochs: int) -> TargetStopper:
    """The ``target`` scheduler of an ``early_stopping`` section."""
    return TargetStopper(early.target, early.grace_period, early.direction)
