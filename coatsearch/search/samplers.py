"""The space's Optuna sampler, seeded per trial.

A sampler built once with ``seed`` draws one fixed sequence from its first trial on. Every
process that builds it starts that sequence again: the workers of a run at
``concurrency`` > 1 drew the same points as each other, and a resumed run drew the points
its first run had already trained. `TrialSeeded` gives trial N the seed derived from
(``seed``, N) instead, so what trial N draws depends on the space's seed, its number and
the trials before it, never on which worker draws it or how often the run was restarted:
an interrupted and resumed search draws the points an uninterrupted one would.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from coatsearch.search.registries import SAMPLERS

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState

    from coatsearch.search.plan import SearchPlan


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``: independent streams for every (seed, number) pair
    (``seed + number`` would give trial 1 of seed 0 the stream of trial 0 of seed 1)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeeded(BaseSampler):
    """A sampler rebuilt for each trial by ``build(trial_seed(seed, number + offset))``.

    Optuna's samplers keep their model in the study, not in the object (TPE and NSGA-II
    read the finished trials at each draw), so a fresh one per trial loses nothing but
    its random state, which is the point. ``offset`` maps a study's trial numbers to the
    run's when they differ (Ray's searcher replays the finished trials into a study of
    its own)."""

    def __init__(self, build: Callable[[int], BaseSampler], seed: int, offset: int = 0) -> None:
        self._build, self._seed, self._offset = build, seed, offset
        self._current: tuple[int, BaseSampler] | None = None  # the latest trial's number and sampler

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if self._current is None or self._current[0] != trial.number:
            with warnings.catch_warnings():  # multivariate TPE is experimental, relied on knowingly
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._current = (trial.number, self._build(trial_seed(self._seed, trial.number + self._offset)))
        return self._current[1]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's sampler is seeded from its number."""


@dataclass(frozen=True)
class SamplerRecipe:
    """How to build the space's sampler for one seed (a plain object: Ray Tune pickles the
    searcher, and with it this)."""

    kind: str
    trials: int

    def __call__(self, seed: int) -> BaseSampler:
        return SAMPLERS[self.kind](seed, self.trials)  # type: ignore[no-any-return]


def tpe(seed: int, trials: int) -> BaseSampler:
    """Multivariate TPE, after a third of the trials (2 to 10) drawn at random."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(2, trials // 3)))


def nsga2(seed: int, trials: int) -> BaseSampler:
    """NSGA-II with a population of half the trials (4 to 50)."""
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 2)))


def random(seed: int, trials: int) -> BaseSampler:
    """Independent uniform draws (also the grid's: it only serves enqueued points)."""
    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(plan: SearchPlan, offset: int = 0) -> BaseSampler:
    """The space's sampler, seeded per trial (`TrialSeeded`). A grid is walked by
    enqueuing its points, so its sampler only ever serves enqueued values."""
    space = plan.space
    return TrialSeeded(SamplerRecipe(space.sampler, space.trials), space.seed, offset)
