"""Early stopping by epoch rungs (ASHA) against the study's other trials.

Optuna cannot prune multi-objective studies, so ASHA is applied here: at each rung a
trial continues only while its metric is among the best of the trials recorded there;
stopped trials keep status ``stopped`` and their fidelity.
"""

from __future__ import annotations

import json

import optuna

from coatsearch.objectives import Direction


class RungStopper:
    """ASHA by epoch: at rungs ``grace * rf**k`` a trial continues only if its metric is in
    the top ``1/rf`` of all trials recorded at that rung."""

    def __init__(self, study: optuna.Study, grace: int, factor: int, max_epochs: int,
                 metric: str = "val_acc", direction: Direction = Direction.MAX) -> None:
        self.study, self.factor, self.metric, self.direction = study, factor, metric, direction
        self.rungs = []
        rung = grace
        while rung < max_epochs:
            self.rungs.append(rung)
            rung *= factor

    def should_stop(self, epoch: int, value: float) -> bool:
        """Stop at a rung unless ``value`` is among the best of the study's recorded trials there."""
        if epoch not in self.rungs:
            return False
        peers = []
        for trial in self.study.get_trials(deepcopy=False):
            history = json.loads((trial.user_attrs.get("row") or {}).get("history") or "[]")
            if len(history) >= epoch and history[epoch - 1].get(self.metric) is not None:
                peers.append(history[epoch - 1][self.metric])
        return self.stop_among(epoch, value, peers)

    def stop_among(self, epoch: int, value: float, peers: list[float]) -> bool:
        """The rule itself, given the values ``peers`` recorded at ``epoch`` (a replay keeps
        its own records of them): stop at a rung when ``value`` is below the top
        ``1/factor`` of them, once there are at least ``factor``."""
        if epoch not in self.rungs or len(peers) < self.factor:
            return False
        sign = self.direction.sign  # compare as "higher is better"
        ordered = sorted((sign * p for p in peers), reverse=True)
        cutoff = ordered[max(0, len(ordered) // self.factor - 1)]
        return sign * value < cutoff
