"""Early-stopping schedulers: given a trial's metric at an epoch and what its peers
recorded at that epoch, continue or stop. The same rule runs on every backend that
schedules trials itself (optuna, replay); Ray runs its own ASHA.

Optuna cannot prune multi-objective studies, so ASHA is applied here (`Asha`): at each
rung a trial continues only while its metric is among the best of the trials recorded
there; stopped trials keep status ``stopped`` and their fidelity. A new scheduler joins
`coatsearch.search.registries.SCHEDULERS` by name with a factory ``(early_stopping, max_epochs) -> Scheduler``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from coatsearch.objectives import Direction
from coatsearch.search.registries import SCHEDULERS

if TYPE_CHECKING:
    import optuna

    from coatsearch.search.plan import SearchPlan


class Scheduler(Protocol):
    """Decides, at the epochs it names, whether a trial stops, from its peers' records."""

    def decides_at(self, epoch: int) -> bool:
        """Whether ``epoch`` is one where this scheduler may stop a trial."""
        ...

    def stop_among(self, epoch: int, value: float, peers: list[float]) -> bool:
        """Stop a trial whose metric is ``value`` at ``epoch``, given ``peers``: the values
        the other trials recorded there."""
        ...


class Asha:
    """ASHA by epoch: at rungs ``grace * rf**k`` a trial continues only if its metric is in
    the top ``1/rf`` of all trials recorded at that rung."""

    def __init__(self, grace: int, factor: int, max_epochs: int, direction: Direction = Direction.MAX) -> None:
        self.factor, self.direction = factor, direction
        self.rungs = []
        rung = grace
        while rung < max_epochs:
            self.rungs.append(rung)
            rung *= factor

    def decides_at(self, epoch: int) -> bool:
        return epoch in self.rungs

    def stop_among(self, epoch: int, value: float, peers: list[float]) -> bool:
        """Stop at a rung when ``value`` is below the top ``1/factor`` of ``peers``, once
        there are at least ``factor`` of them."""
        if epoch not in self.rungs or len(peers) < self.factor:
            return False
        sign = self.direction.sign  # compare as "higher is better"
        ordered = sorted((sign * p for p in peers), reverse=True)
        cutoff = ordered[max(0, len(ordered) // self.factor - 1)]
        return sign * value < cutoff


def asha(early: Any, max_epochs: int) -> Scheduler:
    """The ``asha`` scheduler of an ``early_stopping`` section."""
    return Asha(early.grace_period, early.reduction_factor, max_epochs, early.direction)


def make_scheduler(plan: SearchPlan) -> Scheduler | None:
    """The plan's early-stopping scheduler, or None (``kind: none``)."""
    early = plan.space.early_stopping
    return None if early.kind == "none" else SCHEDULERS[early.kind](early, plan.epochs)  # type: ignore[no-any-return]


class RungStopper:
    """A scheduler applied to an Optuna study's trials: the peers are the metric each
    stored row recorded at the epoch."""

    def __init__(self, study: optuna.Study, scheduler: Scheduler, metric: str = "val_acc") -> None:
        self.study, self.scheduler, self.metric = study, scheduler, metric

    def should_stop(self, epoch: int, value: float) -> bool:
        """Stop unless ``value`` holds up among the study's records at ``epoch``."""
        if not self.scheduler.decides_at(epoch):
            return False
        peers = []
        for trial in self.study.get_trials(deepcopy=False):
            history = json.loads((trial.user_attrs.get("row") or {}).get("history") or "[]")
            if len(history) >= epoch and history[epoch - 1].get(self.metric) is not None:
                peers.append(history[epoch - 1][self.metric])
        return self.scheduler.stop_among(epoch, value, peers)
