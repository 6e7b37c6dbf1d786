"""Early-stopping schedulers: after each epoch of a trial, continue or stop, judged from
its own course so far and the courses of the trials that have finished. The same rule
runs on every backend (optuna, replay, and ray through `ray_schedulers`).

Optuna cannot prune multi-objective studies, so the schedulers are applied here: ASHA
(`Asha`), Hyperband (`coatsearch.search.hyperband`), multi-objective successive halving
(`coatsearch.search.moasha`) and learning-curve extrapolation
(`coatsearch.search.curves`); stopped trials keep status ``stopped`` and their fidelity.
A new scheduler joins `coatsearch.search.registries.SCHEDULERS` by name with a factory
``(early_stopping, max_epochs) -> Scheduler``: either a `RungScheduler`
(``decides_at``/``stop_among``, judged on the metric at an epoch) or a `CourseScheduler`
(``judge``, given whole courses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from coatsearch.objectives import Direction
from coatsearch.search.registries import SCHEDULERS
from coatsearch.search.stopping import SIGNALS, STATIC_OBJECTIVES, rung_ladder

if TYPE_CHECKING:
    import optuna

    from coatsearch.search.plan import SearchPlan
    from coatsearch.search.rows import TrialRow


@dataclass(frozen=True)
class Course:
    """A trial as a scheduler sees it: its number, the early-stopping metric after each
    epoch (``None`` where not measured), the objective vector after each epoch, the
    vector of its static objectives (FLOPs, params), every objective signed so that
    higher is better, and the `SIGNALS` after each epoch (as recorded, ``None`` where not)."""

    number: int
    values: tuple[float | None, ...]
    vectors: tuple[tuple[float, ...], ...] = ()
    statics: tuple[float, ...] = ()
    signals: tuple[tuple[float | None, ...], ...] = ()

    @property
    def epochs(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Verdict:
    """A scheduler's answer: stop or not, and for a scheduler that predicts a trial's final
    metric (`coatsearch.search.curves`) that prediction and its standard deviation."""

    stop: bool
    prediction: float | None = None
    sd: float | None = None
    epoch: int | None = None


CONTINUE = Verdict(False)


class RungScheduler(Protocol):
    """Decides, at the epochs it names, whether a trial stops, from its peers' records."""

    def decides_at(self, epoch: int) -> bool:
        """Whether ``epoch`` is one where this scheduler may stop a trial."""
        ...

    def stop_among(self, epoch: int, value: float, peers: list[float]) -> bool:
        """Stop a trial whose metric is ``value`` at ``epoch``, given ``peers``: the values
        the finished trials recorded there."""
        ...


@runtime_checkable
class CourseScheduler(Protocol):
    """Decides from a trial's whole course and the finished trials' courses."""

    def judge(self, trial: Course, finished: Sequence[Course]) -> Verdict:
        ...


Scheduler = RungScheduler | CourseScheduler


def judge(scheduler: Scheduler, trial: Course, finished: Sequence[Course]) -> Verdict:
    """The verdict of any scheduler on ``trial`` at its last epoch."""
    if isinstance(scheduler, CourseScheduler):
        return scheduler.judge(trial, finished)
    epoch = trial.epochs
    value = trial.values[-1] if trial.values else None
    if value is None or not scheduler.decides_at(epoch):
        return CONTINUE
    peers = [v for c in finished if c.epochs >= epoch and (v := c.values[epoch - 1]) is not None]
    return Verdict(scheduler.stop_among(epoch, value, peers))


class Asha:
    """ASHA by epoch: at rungs ``grace * rf**k`` a trial continues only if its metric is in
    the top ``1/rf`` of all trials recorded at that rung."""

    def __init__(self, grace: int, factor: int, max_epochs: int, direction: Direction = Direction.MAX) -> None:
        self.factor, self.direction = factor, direction
        self.rungs = rung_ladder(grace, factor, max_epochs)

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


class Courses:
    """Builds `Course`s from what a backend holds: a per-epoch history and the candidate's
    counts. The objectives are the plan's, each signed so that higher is better."""

    def __init__(self, plan: SearchPlan) -> None:
        self.metric = plan.space.early_stopping.metric
        self.sign = plan.space.early_stopping.direction.sign
        self.objectives = [(m, plan.direction_of(m).sign) for m in plan.metrics]

    def of(self, number: int, history: Sequence[Any], counts: Mapping[str, Any]) -> Course:
        """``history``: the epochs so far (`coatsearch.search.rows.Epoch`s or mappings, each
        read with ``get``); ``counts``: ``flops`` and ``params`` of the candidate."""

        def signed(value: Any, sign: float) -> float:
            return sign * float(value) if value is not None else float("-inf")

        statics = tuple(signed(counts.get(m), s) for m, s in self.objectives if m in STATIC_OBJECTIVES)
        vectors = tuple(
            tuple(signed(counts.get(m) if m in STATIC_OBJECTIVES else epoch.get(m), s) for m, s in self.objectives)
            for epoch in history)
        values = tuple(None if (v := epoch.get(self.metric)) is None else float(v) for epoch in history)
        signals = tuple(tuple(None if (v := epoch.get(s)) is None else float(v) for s in SIGNALS) for epoch in history)
        return Course(number, values, vectors, statics, signals)

    def of_row(self, row: TrialRow) -> Course:
        return self.of(row.trial, row.history or (), {"flops": row.flops, "params": row.params})


class RungStopper:
    """A scheduler applied to an Optuna study's trials: the finished trials are those whose
    row is stored; the last verdict is kept for the trial's row."""

    def __init__(self, study: optuna.Study, scheduler: Scheduler, plan: SearchPlan) -> None:
        self.study, self.scheduler, self.courses = study, scheduler, Courses(plan)
        self.last: Verdict = CONTINUE

    def should_stop(self, number: int, history: Sequence[Mapping[str, Any]], counts: Mapping[str, Any]) -> bool:
        """Stop unless the trial's course holds up among the study's finished trials."""
        from coatsearch.search.rows import TrialRow

        finished = []
        for trial in self.study.get_trials(deepcopy=False):
            record = trial.user_attrs.get("row")
            if record and trial.number != number:
                row = TrialRow.from_record(record)
                if row.finished:
                    finished.append(self.courses.of_row(row))
        verdict = judge(self.scheduler, self.courses.of(number, history, counts), finished)
        if verdict.prediction is not None:
            self.last = verdict
        return verdict.stop
