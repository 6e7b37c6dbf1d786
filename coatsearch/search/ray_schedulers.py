"""Our own schedulers (`coatsearch.search.rungs`: MO-ASHA, the learning-curve stopper, any
registered one) as a Ray Tune `TrialScheduler`, so a ray search stops trials by the same
rule as the optuna and replay backends. Each trial's per-epoch reports build its course;
the trials that ended are the finished ones it is judged against; the verdicts that carry
a prediction are kept for the trial's row (`LedgerCallback`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.rungs import Course, Courses, Scheduler, Verdict, judge


class CourseTrialScheduler(FIFOScheduler):
    """Runs trials first in, first out, and stops one when our scheduler says so."""

    def __init__(self, plan: SearchPlan, scheduler: Scheduler, number: Callable[[Any], int]) -> None:
        super().__init__()
        self.scheduler, self.courses, self.number = scheduler, Courses(plan), number
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.finished: dict[str, Course] = {}
        self.verdicts: dict[str, Verdict] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get("row"):  # the final report: the trial ends by itself
            return TrialScheduler.CONTINUE
        history = self.histories.setdefault(trial.trial_id, [])
        history.append(result)
        course = self.courses.of(self.number(trial), history, result)
        verdict = judge(self.scheduler, course, list(self.finished.values()))
        if verdict.prediction is not None:
            self.verdicts[trial.trial_id] = verdict
        return TrialScheduler.STOP if verdict.stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._ended(trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._ended(trial, {})

    def _ended(self, trial: Any, result: dict[str, Any]) -> None:
        if trial.trial_id in self.finished:
            return
        if result.get("row"):
            self.finished[trial.trial_id] = self.courses.of_row(
                TrialRow.from_json(result["row"]).replace(trial=self.number(trial)))
        elif self.histories.get(trial.trial_id):
            history = self.histories[trial.trial_id]
            self.finished[trial.trial_id] = self.courses.of(self.number(trial), history, history[-1])
