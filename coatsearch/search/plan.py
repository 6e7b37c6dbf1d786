"""A space compiled once into a `SearchPlan`: everything checked, the grid enumerated.

`compile_space` does, once and before any trial, all the work that is the same for every
trial: it resolves the base network, applies every value each parameter can take to it
(so a value that can never work fails now, not after a run of failed trials), checks that
the budget can be met, that the storage URL and the data source work, and enumerates the
grid. Backends and worker processes receive the plan, never a dict to re-validate.

The grid rule: a grid sampler runs each point exactly once, in the fixed order of
`SearchPlan.grid`, until ``trials`` points have trained (raising ``trials`` later runs the
next ones) or the grid is walked. Infeasible points on the way are recorded and do not
count as trials: the walk goes on past them to the next point that gives a network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from coatsearch.budget import BudgetError, match_budget
from coatsearch.flops import count_analytic
from coatsearch.knobs import apply_params
from coatsearch.objectives import Direction
from coatsearch.presets import load_spec
from coatsearch.search.mlflow_log import check_mlflow
from coatsearch.search.registries import BACKENDS, SAMPLERS
from coatsearch.search.rows import NetSummary, point_key
from coatsearch.search.stopping import check_early_stopping
from coatsearch.search.storage_url import check_storage_server, check_storage_url
from coatsearch.space import DataSettings, SearchSpace, SpaceError, iter_grid
from coatsearch.spec import NetSpec, SpecError
from coatsearch.train.config import TrainConfig, TrainConfigError

StudyDirection = Literal["maximize", "minimize"]


class InfeasibleCandidate(ValueError):
    """The sampled parameters give no valid network within the budget: skip training."""


@dataclass(frozen=True)
class Candidate:
    """The network a parameter set describes, matched to the budget, with its counts and
    the trial's trainer and data settings, validated: a trial trains it as it is, adjusting
    only what the machine decides (threads)."""

    #: the values sampled for the space's parameters
    sampled: dict[str, Any]
    spec: NetSpec
    #: the network as a results row and a dry run describe it (with its counts)
    net: NetSummary
    train: TrainConfig = TrainConfig()
    data: DataSettings = DataSettings()
    budget_note: str = ""


@dataclass(frozen=True)
class SearchPlan:
    """A checked space: ``space`` has its base written out (what a run directory keeps),
    ``base`` is that network, ``grid`` every point of a grid sampler in run order."""

    space: SearchSpace
    base: NetSpec
    #: the space's trainer settings, validated once (the space's ``seed`` unless it sets one)
    train: TrainConfig = TrainConfig()
    grid: tuple[dict[str, Any], ...] | None = None
    #: the grid's first ``grid_walk`` points are the ones this study runs, ``grid_trains``
    #: of them feasible (`walk_grid`)
    grid_walk: int = 0
    grid_trains: int = 0
    #: the point keys a ``prefilter`` keeps (None: no prefilter), `coatsearch.search.prefilter`
    kept: frozenset[str] | None = None

    @property
    def study(self) -> str:
        return self.space.study

    @property
    def epochs(self) -> int:
        """Epochs of a full-fidelity trial: the space's trainer setting."""
        return self.train.epochs

    @property
    def target_trials(self) -> int:
        """Trials to finish: ``trials``, or the grid's feasible points when fewer."""
        return self.grid_trains if self.grid is not None else self.space.trials

    @property
    def grid_points(self) -> tuple[dict[str, Any], ...]:
        """The grid points this study runs, infeasible ones included; empty without a grid."""
        return () if self.grid is None else self.grid[: self.grid_walk]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.space.objectives]

    @property
    def directions(self) -> list[Direction]:
        """Each objective's direction (Ray takes them as they are: ``max`` / ``min``)."""
        return [o.direction for o in self.space.objectives]

    @property
    def study_directions(self) -> list[StudyDirection]:
        """Optuna's ``maximize`` / ``minimize`` per objective."""
        return [d.optuna for d in self.directions]

    def direction_of(self, metric: str) -> Direction:
        """The run's direction for a metric: its objective's, else the metric's usual one."""
        return next((o.direction for o in self.space.objectives if o.metric == metric), Direction.of(metric))

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run sampling through an Optuna trial: one value per parameter."""
        return {name: domain.suggest(trial, name) for name, domain in self.space.params.items()}

    def candidate(self, params: dict[str, Any]) -> Candidate:
        """Apply parameters, match the budget, count. Raises `InfeasibleCandidate`."""
        space = self.space
        if self.kept is not None and point_key(params) not in self.kept:
            prefilter = space.prefilter
            raise InfeasibleCandidate(f"prefiltered: not in the best {prefilter.keep:.0%} of the candidates by "  # type: ignore[union-attr]
                                      f"{prefilter.proxy}")  # type: ignore[union-attr]
        try:
            draft = apply_params(self.base, params, space.knob_context)
        except (SpecError, TypeError, ValueError) as exc:
            raise InfeasibleCandidate(str(exc)) from None
        # each value was checked alone when the space was compiled; together they may not fit
        # (``train.steps`` below ``train.epochs``)
        try:
            train = self.train.replace(**draft.train) if draft.train else self.train
            data = DataSettings.model_validate({**space.data.model_dump(), **draft.data}) if draft.data else space.data
        except (TrainConfigError, ValueError) as exc:
            raise InfeasibleCandidate(str(exc).splitlines()[0]) from None
        spec, note = draft.spec, ""
        budget = space.budget
        if budget is not None and budget.targets:
            try:
                match = match_budget(spec, flops=budget.flops, params=budget.params, by=budget.by,
                                     tolerance=budget.tolerance, strict=True)
            except (BudgetError, SpecError) as exc:
                raise InfeasibleCandidate(str(exc)) from None
            spec, note = match.spec, match.message
        if budget is not None and budget.latency_ms is not None:
            from coatsearch.latency.budget import match_latency
            from coatsearch.latency.profile import load_checked

            try:
                spec, predicted = match_latency(spec, budget.latency_ms, budget.batch,
                                                load_checked(space.latency_profile or ""), budget.tolerance)
            except (BudgetError, SpecError) as exc:
                raise InfeasibleCandidate(str(exc)) from None
            note = f"predicted {predicted:.4g} ms at batch {budget.batch}"
        counts = count_analytic(spec)
        if budget is not None:
            for metric, bounds in (("flops", budget.flops_range), ("params", budget.params_range)):
                got = getattr(counts, metric)
                if bounds is not None and not bounds[0] <= got <= bounds[1]:
                    raise InfeasibleCandidate(f"{metric} {got:.3g} outside [{bounds[0]:.3g}, {bounds[1]:.3g}]")
        return Candidate(sampled=dict(params), spec=spec, net=NetSummary.of(spec, counts.flops, counts.params),
                         train=train, data=data, budget_note=note)


# --------------------------------------------------------------------------- compiling
def compile_space(space: SearchSpace, *, source: str | None = None, check_data: bool = True,
                  check_storage: bool = True) -> SearchPlan:
    """Check a space against its base, budget, storage and data; `SpaceError` (one line,
    naming the field, after ``source``: the space file) for anything that would make
    trials fail. ``check_data`` reads the data source, ``check_storage`` reaches a storage
    server (a dry run does neither)."""
    try:
        return _compile(space, check_data, check_storage)
    except SpaceError as exc:
        if source is None or str(exc).startswith(f"{source}: "):
            raise
        raise SpaceError(f"{source}: {exc}") from None


def _check_names(space: SearchSpace) -> None:
    """The backend, sampler and scheduler a space names are registered ones."""
    for field, registry, name in (("backend", BACKENDS, space.backend), ("sampler", SAMPLERS, space.sampler)):
        if name not in registry:
            raise SpaceError(f"{field}: unknown {registry.kind} {name!r}; expected {registry.expected()}")
    check_early_stopping(space, space.epochs)


def _compile(space: SearchSpace, check_data: bool, check_storage: bool) -> SearchPlan:
    _check_names(space)
    base = base_of(space)
    train = trainer_of(space)
    resolved = space.model_copy(update={"base": base.to_dict()})
    for name, domain in space.params.items():
        values = domain.choices if domain.choices is not None else [domain.low, domain.high]
        for value in values:
            _check_value(space, base, train, name, value)
    _check_budget(space, base)
    if space.resources.workers > 1 and space.backend != "ray":
        raise SpaceError(f"resources.workers: {space.resources.workers} data-parallel workers per trial "
                         "need the ray backend (--backend ray)")
    if space.storage is not None:
        check_storage_url(space.storage, "storage")
        if check_storage:
            check_storage_server(space.storage, "storage")
    check_mlflow(space)
    if check_data:
        check_data_source(space.data, base.image_size, space.seed)
    plan = SearchPlan(space=resolved, base=base, train=train)
    if space.prefilter is not None:
        from coatsearch.search.prefilter import kept_points

        plan = replace(plan, kept=kept_points(resolved, plan.candidate, InfeasibleCandidate))
    return walk_grid(plan, tuple(iter_grid(space))) if space.sampler == "grid" else plan


def walk_grid(plan: SearchPlan, grid: tuple[dict[str, Any], ...]) -> SearchPlan:
    """``plan`` with its grid and how far into it the study goes: up to the point where
    ``trials`` feasible points are reached, or to the end. Deciding feasibility costs no
    training (a budget match and a count), so it is done once, here.

    A grid that would train nothing (every point infeasible: a parameter that no network
    of the others' values has, a budget none meets) is refused."""
    walk, trains, first_reason = 0, 0, ""
    for params in grid:
        if trains == plan.space.trials:
            break
        walk += 1
        try:
            plan.candidate(params)
            trains += 1
        except InfeasibleCandidate as exc:
            first_reason = first_reason or f"{point_key(params)}: {exc}"
    if trains == 0 and grid:
        which = ("its one point gives no network to train: " if len(grid) == 1
                 else f"none of its {len(grid)} points gives a network to train; the first, ")
        raise SpaceError(f"params: the grid trains nothing: {which}{first_reason}")
    return replace(plan, grid=grid, grid_walk=walk, grid_trains=trains)


def base_of(space: SearchSpace) -> NetSpec:
    """The space's base network (a preset, a spec file or an inline spec)."""
    try:
        if isinstance(space.base, str):
            return load_spec(space.base)
        return NetSpec.from_dict(space.base, source="base")
    except SpecError as exc:
        message = str(exc)
        head, sep, _ = message.partition(": ")
        if message.startswith("base"):
            raise SpaceError(message) from None
        # "preset: unknown ..." reads as base.preset; a file's own message keeps its name
        raise SpaceError(f"base.{message}" if sep and head.isidentifier() else f"base: {message}") from None


def trainer_of(space: SearchSpace) -> TrainConfig:
    """The space's trainer settings as the one validated `TrainConfig` every candidate
    starts from; a trial's seed is the space's unless ``train.seed`` sets one."""
    try:
        return TrainConfig.from_dict({"seed": space.seed, **space.train})
    except TrainConfigError as exc:
        raise SpaceError(f"train.{exc}") from None


def _check_value(space: SearchSpace, base: NetSpec, train: TrainConfig, name: str, value: Any) -> None:
    """One value of one parameter, applied alone to the base."""
    where = f"params.{name}"
    if name.startswith("train."):
        try:
            train.replace(**{name[6:]: value})
        except TrainConfigError as exc:
            raise SpaceError(f"{where}: {value!r} is not a valid trainer setting: {exc}") from None
        return
    if name.startswith("data."):
        try:
            DataSettings.model_validate({**space.data.model_dump(), name[5:]: value})
        except ValueError as exc:
            raise SpaceError(f"{where}: {value!r} is not a valid data setting: {exc}".splitlines()[0]) from None
        return
    try:
        apply_params(base, {name: value}, space.knob_context)
    except (SpecError, TypeError, ValueError, ArithmeticError) as exc:
        raise SpaceError(f"{where}: {value!r} does not apply to the base: {exc}") from None


def _check_budget(space: SearchSpace, base: NetSpec) -> None:
    """An impossible target (below the smallest spec, above the sanity bound) fails now."""
    uses_profile = "latency_ms" in [o.metric for o in space.objectives] and not space.latency_measure
    if (space.budget is not None and space.budget.latency_ms is not None) or (uses_profile and space.latency_profile):
        from coatsearch.latency.profile import LatencyError, load_checked

        if not space.latency_profile:
            raise SpaceError("budget.latency_ms: needs latency_profile, a profile from `coatsearch latency calibrate`")
        try:
            load_checked(space.latency_profile).check_batch(space.budget.batch if space.budget is not None else 1)
        except LatencyError as exc:
            raise SpaceError(f"latency_profile: {exc}") from None
    if space.budget is None or not space.budget.targets:
        return
    try:
        match_budget(base, flops=space.budget.flops, params=space.budget.params, by=space.budget.by,
                     tolerance=space.budget.tolerance)
    except BudgetError as exc:
        field, _, why = str(exc).partition(": ")
        field = field if field in ("flops", "params") else next(iter(space.budget.targets))
        raise SpaceError(f"budget.{field}: {why or exc}") from None


def check_data_source(data: DataSettings, image_size: int, seed: int = 0) -> None:
    """Read the data source once (missing, empty, unreadable or truncated data fails here,
    not in every trial); the trial processes of this machine then reuse the read."""
    from coatsearch.data import DataError
    from coatsearch.search.inputs import load_trial_data

    try:
        load_trial_data(data, image_size, seed)
    except DataError as exc:
        raise SpaceError(f"data.source: {exc}") from None
