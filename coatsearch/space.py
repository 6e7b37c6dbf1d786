"""Search spaces: what to search, under which budget, trained how, run where.

A space is a YAML file validated into an immutable `SearchSpace`. This module checks its
*shape* only: field types, known parameter names, enumerable grids. Whether each value
applies to the base network and the budget can be met is checked once, before any trial,
when the space is compiled into a plan (`coatsearch.search.compile_space`). Any field can
be overridden from the command line with ``--set dotted.key=value``.

Parameters (``params:``) are keyed by name; each has a domain, either ``choices: [...]``
or ``low``/``high`` (with optional ``step``, ``log``). The names are those of
`coatsearch.knobs`: a knob (``layout``, ``split``, ``head_dim``, ``phi``, ...), a spec path
(``stages[1].blocks``), ``train.<setting>``, ``data.<setting>`` or ``seed``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coatsearch.data.listing import source_from
from coatsearch.domains import Domain
from coatsearch.errors import CoatsearchError, cut
from coatsearch.files import load_yaml, load_yaml_file
from coatsearch.knobs import KNOBS, KnobContext, parameter_kind
from coatsearch.objectives import Direction, Objective
from coatsearch.trackers import Tracking, rooted_tracking
from coatsearch.train.config import TrainConfig
from coatsearch.units import parse_count
from coatsearch.urls import masked
from coatsearch.validation import FieldError, validate_mapping


class SpaceError(CoatsearchError):
    """An invalid search space; one line naming the field and what was expected."""


class _Frozen(BaseModel):
    # infinities and NaN are refused wherever a space has a number
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Budget(_Frozen):
    """Match every candidate to a target, or keep it in a range.

    ``flops`` or ``params`` alone: matched by ``by`` (width, depth or both). Both at once:
    width and depth move together until both are met within ``tolerance``, as the paper's
    layout comparisons held both similar (`coatsearch.budget.match_budget`); ``by`` then
    does not apply, except ``ratios``: widths keep their ratios exactly and the depth moves
    to meet the FLOPs; a params target is then reported, not met."""

    flops: float | None = None
    params: float | None = None
    by: Literal["width", "depth", "both", "ratios"] = "width"
    tolerance: float = Field(0.02, gt=0, lt=1)
    flops_range: tuple[float, float] | None = None
    params_range: tuple[float, float] | None = None
    #: a latency target (ms per call at ``batch``), predicted from the space's ``latency_profile``
    latency_ms: float | None = Field(None, gt=0)
    batch: int = Field(1, ge=1)

    @field_validator("flops", "params", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return None if value is None else parse_count(value)

    @field_validator("flops_range", "params_range", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError("expected [low, high]")
        return tuple(parse_count(v) for v in value)

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.latency_ms is not None and (self.flops is not None or self.params is not None):
            raise ValueError("latency_ms: a latency target is matched alone, not with flops or params")
        for name in ("flops", "params"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}: the target must be positive, got {value:g}")
            bounds = getattr(self, f"{name}_range")
            if bounds is not None and not 0 <= bounds[0] < bounds[1]:
                raise ValueError(f"{name}_range: expected 0 <= low < high, got {list(bounds)}")
        return self

    @property
    def target(self) -> tuple[str, float] | None:
        """The first target (FLOPs when both are set): what a candidate's error is against."""
        if self.flops is not None:
            return "flops", self.flops
        if self.params is not None:
            return "params", self.params
        return None

    @property
    def targets(self) -> dict[str, float]:
        """Every target set, by metric (empty: the budget only filters by range)."""
        return {name: value for name, value in (("flops", self.flops), ("params", self.params)) if value is not None}


class DataSettings(_Frozen):
    """Which images a trial trains on and how they are read: the ``source`` (a name of
    `coatsearch.data.sources.SOURCES`, ``KIND:ARG`` or a folder), a stratified training
    subset and whether each training seed draws its own, the validation share,
    augmentation, how an image folder is read and what an unreadable image does. Frozen:
    a candidate carries it validated, and equal settings share one read of the data in a
    process (`coatsearch.search.inputs`)."""

    source: str = "fashion-mnist"
    #: two images at least: one training batch needs two (BatchNorm), so one makes every trial fail
    train_size: int | None = Field(None, ge=2)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    augment: Literal["none", "light", "randaugment"] = "none"
    #: Image folders: ``prepared`` (decoded once into a shared memory-mapped cache),
    #: ``memory`` (decoded into each trial process) or ``stream`` (files read per batch).
    mode: Literal["prepared", "memory", "stream"] = "prepared"
    #: An unreadable image file: ``fail`` (an error naming it) or ``skip`` (left out).
    on_bad_file: Literal["fail", "skip"] = "fail"
    #: The ``train_size`` subset: ``fixed`` (drawn by the space's ``seed``, the same images
    #: for every training seed) or ``per_seed`` (drawn by the space's and the trial's seeds
    #: together); validation and test are the same images either way.
    subset: Literal["fixed", "per_seed"] = "fixed"


class Prefilter(_Frozen):
    """Search only the best ``keep`` share of the space's candidates as ``proxy`` ranks
    them (`coatsearch.proxies`); the rest are infeasible. Every parameter must be discrete."""

    proxy: str
    keep: float = Field(gt=0, le=1)
    #: the proxies' initial weights and images: fixed, so every seed of a study searches one kept set
    seed: int = Field(0, ge=0)


class EarlyStopping(_Frozen):
    """Early stopping by epoch on a per-epoch metric (accuracies up, losses down): which
    scheduler, the first epoch it may stop a trial at, and each scheduler's settings."""

    #: ``none`` or a scheduler of `coatsearch.search.registries.SCHEDULERS` (checked when compiled):
    #: ``asha``, ``hyperband``, ``moasha``, ``curve``, ``target``
    kind: str = "none"
    metric: str = "val_acc"
    grace_period: int = Field(1, ge=1)
    #: successive halving keeps the top 1/reduction_factor at each rung
    reduction_factor: int = Field(2, ge=2)
    #: ``hyperband``: how many brackets (None: every one the epochs allow)
    brackets: int | None = Field(None, ge=1)
    #: ``curve``: stop when the probability of beating the threshold is below this
    threshold: float = Field(0.05, gt=0, lt=1)
    #: ``curve``: the threshold is the top-th best final value (of those no worse in FLOPs/params)
    top: int = Field(1, ge=1)
    #: ``target``: stop a trial once its metric reaches this value (0.98 of train_eval_acc: it fits)
    target: float | None = None

    @model_validator(mode="after")
    def _numeric_metric(self) -> EarlyStopping:
        numeric = ("val_acc", "val_loss", "train_eval_acc", "train_acc_running", "train_loss_running")
        if self.kind != "none" and self.metric not in numeric:
            raise ValueError(f"metric: {self.kind} needs a per-epoch numeric metric ({', '.join(numeric)}), got {self.metric!r}")
        if self.kind == "target" and self.target is None:
            raise ValueError(f"target: the target scheduler stops a trial once its {self.metric} reaches a value; set one, "
                             "such as target: 0.98")
        if self.target is not None and self.kind != "target":
            raise ValueError(f"target: only kind target reads it; kind is {self.kind}")
        if self.target is not None and self.metric.endswith("acc") and not 0 < self.target <= 1:
            raise ValueError(f"target: {self.metric} is a fraction, expected a value in (0, 1], got {self.target:g}")
        return self

    @property
    def direction(self) -> Direction:
        return Direction.of(self.metric)


class Resources(_Frozen):
    """Per-trial resources. ``accelerator_type`` pins trials to Ray nodes of that type (TPU-V4...)."""

    cpu: float = Field(2, gt=0)
    gpu: float = Field(0, ge=0)
    #: Data-parallel replicas per trial (ray backend); ``cpu``/``gpu`` are then per replica.
    workers: int = Field(1, ge=1)
    accelerator_type: str | None = None
    custom: dict[str, float] = Field(default_factory=dict)


class Scaling(_Frozen):
    """Compound-scaling constants: depth alpha**phi, width beta**phi, resolution gamma**phi."""

    alpha: float = Field(1.2, gt=0)
    beta: float = Field(1.1, gt=0)
    gamma: float = Field(1.15, gt=0)


#: The most points a grid may have: each is checked against the base and budget before any
#: trial (a budget match and a count, about a millisecond each), so a larger grid would
#: keep a run from starting for minutes.
MAX_GRID_POINTS = 20_000
#: The most trials a study may ask for.
MAX_TRIALS = 1_000_000
#: Seeds are 32-bit unsigned (NumPy's and torch's generators both take them).
MAX_SEED = 2**32 - 1


class SearchSpace(_Frozen):
    """A search as its YAML file states it: the study's name, the base network, the
    parameters to vary (``params``) and how to sample them, the budget every candidate is
    matched to, the objectives, trainer and data settings, early stopping, and where and
    how many trials run. Only its shape is checked here; `coatsearch.search.compile_space`
    checks it against the base network, the registries, the storage and the data, once,
    and hands every later step the typed plan."""

    #: a folder name under runs/: letters, digits, ``_``, ``-`` and dots, not only dots
    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str | None = None
    base: Any = Field(description="a preset name, a spec file path, or an inline spec mapping")
    params: dict[str, Domain] = Field(default_factory=dict)
    split_total: int | None = Field(None, ge=2)
    scaling: Scaling = Scaling()
    budget: Budget | None = None
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(metric="val_acc")], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    data: DataSettings = DataSettings()
    #: a sampler of `coatsearch.search.registries.SAMPLERS` (checked when compiled)
    sampler: str = "tpe"
    early_stopping: EarlyStopping = EarlyStopping()
    #: a backend of `coatsearch.search.registries.BACKENDS` (checked when compiled)
    backend: str = "optuna"
    trials: int = Field(gt=0, le=MAX_TRIALS)
    concurrency: int = Field(1, gt=0)
    resources: Resources = Resources()
    seed: int = Field(0, ge=0, le=MAX_SEED)
    retries: int = Field(1, ge=0, description="times a trial whose worker died runs again before it counts as failed")
    storage: str | None = Field(None, description="an Optuna storage URL (optuna backend)")
    address: str | None = Field(None, description="a Ray cluster address (ray backend)")
    table: str | None = Field(None, description="a table of trained networks to replay (replay backend): a folder or a name")
    latency_profile: str | None = Field(None, description="a profile from `coatsearch latency calibrate`: "
                                        "budget.latency_ms and the latency_ms objective are predicted from it")
    prefilter: Prefilter | None = None
    latency_measure: bool = Field(False, description="measure the latency_ms objective in the trial even with a profile")
    warm_start: str | None = Field(None, description="an earlier run directory whose finished trials the sampler "
                                   "is given before the first new trial (`coatsearch.warm_start`)")
    tracking: Tracking | None = Field(None, description="where trials are logged besides the run directory (mlflow)")

    @field_validator("study")
    @classmethod
    def _stays_in_runs(cls, study: str) -> str:
        if not study.strip("."):
            raise ValueError(f"{study!r} would name a folder outside runs/; expected a name with a letter or digit")
        return study

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Domain]) -> dict[str, Domain]:
        for name in params:
            if parameter_kind(name, data_fields=DataSettings.model_fields) is None:
                raise FieldError(
                    (name,),
                    f"unknown parameter; expected one of {', '.join([*KNOBS, 'seed'])}, a spec path "
                    "such as stages[1].blocks, train.<setting> or data.<setting>",
                )
            if name.startswith("train.") and name[6:] not in TrainConfig.model_fields:
                raise FieldError((name,), f"the trainer has no setting {name[6:]!r}")
        return params

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        if self.sampler == "grid":
            points = 1
            for name, domain in self.params.items():
                try:
                    points *= domain.grid_size()
                except ValueError as exc:
                    raise FieldError(("params", name), str(exc)) from None
            if points > MAX_GRID_POINTS:
                sizes = " x ".join(f"{self.params[n].grid_size():,}" for n in self.params)
                raise FieldError(("params",), f"the grid has {points:,} points ({sizes}), more than "
                                 f"{MAX_GRID_POINTS:,}; use fewer values or another sampler (tpe, random)")
        if len({o.metric for o in self.objectives}) != len(self.objectives):
            raise FieldError(("objectives",), "each metric may appear once")
        if not self.params and self.trials > 1:
            raise FieldError(
                ("params",),
                f"the space has no parameters, so all {self.trials} trials would train the same "
                "network; add a parameter (seed repeats a configuration) or set trials: 1",
            )
        if self.storage is not None and self.backend != "optuna":
            raise FieldError(("storage",), "a storage URL is for the optuna backend")
        if self.table is not None and self.backend != "replay":
            raise FieldError(("table",), "a table is replayed by the replay backend (backend: replay)")
        if self.table is None and self.backend == "replay":
            raise FieldError(("table",), "the replay backend needs a table: a table folder or name (--table)")
        return self

    @property
    def trial_threads(self) -> int:
        """Torch threads per trial: the CPUs each trial is given."""
        return max(1, int(self.resources.cpu))

    @field_validator("base")
    @classmethod
    def _base_shape(cls, base: Any) -> str | dict[str, Any]:
        if not isinstance(base, (str, dict)):
            raise ValueError(f"expected a preset name, a spec file or an inline spec, got {base!r}")
        return base

    @property
    def knob_context(self) -> KnobContext:
        """What knobs read from the space besides their values."""
        s = self.scaling
        return KnobContext(split_total=self.split_total, alpha=s.alpha, beta=s.beta, gamma=s.gamma)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", TrainConfig.model_fields["epochs"].default))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- loading
def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML scalars/lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not all(part.strip() for part in key.split(".")):
            raise SpaceError(cut(f"--set {masked(item)}: expected dotted.key=value"))
        try:
            value = load_yaml(raw, f"--set {item}", SpaceError)
        except SpaceError:
            raise SpaceError(cut(f"--set {masked(item)}: the value is not valid YAML")) from None
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            # params keys may themselves contain dots ("train.lr"): join the rest
            if isinstance(node, dict) and part == "params" and i == 0 and len(parts) > 2:
                rest = parts[1:]
                name = ".".join(rest[:-1]) if rest[-1] in Domain.model_fields else ".".join(rest)
                field = rest[-1] if rest[-1] in Domain.model_fields else None
                params = node.setdefault("params", {})
                if field is None:
                    params[name] = value
                else:
                    params.setdefault(name, {})[field] = value
                break
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        else:
            node[parts[-1]] = value
    return data


def space_from_dict(data: Any, source: str | None = None) -> SearchSpace:
    return validate_mapping(SearchSpace, data, SpaceError, source=source, what="space")


def load_space(path: str | Path, overrides: list[str] | None = None, *, relative_data: bool = True) -> SearchSpace:
    """Read, override and validate a space file; `SpaceError` names the file and field.

    A relative path in the file's ``data.source``, ``warm_start`` or ``tracking.mlflow`` is taken from the file's
    folder (`source_from`; ``relative_data=False`` keeps it as written, for a run folder's
    saved space); one given in ``overrides`` (``--set``) from the working directory."""
    path = Path(path)
    if path.is_dir():
        raise SpaceError(f"{path}: is a directory, expected a YAML space file")
    data = load_yaml_file(path, SpaceError, "space file")
    if isinstance(data, dict):
        settings = data.get("data")
        if relative_data and isinstance(settings, dict) and isinstance(settings.get("source"), str):
            data = {**data, "data": {**settings, "source": source_from(settings["source"], path.parent)}}
        if relative_data and isinstance(data.get("warm_start"), str):
            data = {**data, "warm_start": str(path.parent / data["warm_start"])}
        data = rooted_tracking(data, path.parent) if relative_data else data
        data = apply_overrides(data, overrides or [])
        if isinstance(data.get("warm_start"), str):  # kept absolute: a resumed run reads it from anywhere
            data = {**data, "warm_start": os.path.abspath(data["warm_start"])}
        data = rooted_tracking(data, Path.cwd())  # an override's, from the working directory
    return space_from_dict(data, source=str(path))


def iter_grid(space: SearchSpace) -> list[dict[str, Any]]:
    """All parameter combinations, in a fixed order (for the grid sampler)."""
    names = list(space.params)
    values = [space.params[n].grid_values() for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]
