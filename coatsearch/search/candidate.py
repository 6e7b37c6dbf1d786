"""From sampled parameters to the network a trial trains.

`sample_params` draws values through an Optuna trial (both backends sample through
Optuna). `make_candidate` applies them to the space's base spec, in a fixed order — layout,
split, per-field paths, stage-wide knobs, scaling — then matches the budget. The result
is a `Candidate`: the spec, its analytic counts, and the training settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from coatsearch.budget import round_to_multiple
from coatsearch.space import SearchSpace
from coatsearch.spec import NetSpec, SpecError

_INDEXED = re.compile(r"^stages\[(\d+)\]\.([a-z_]+)$")


class InfeasibleCandidate(ValueError):
    """The sampled parameters give no valid network within the budget: skip training."""


@dataclass(frozen=True)
class Candidate:
    params: dict[str, Any]
    spec: NetSpec
    flops: int
    n_params: int
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    budget_note: str = ""


def sample_params(space: SearchSpace, trial: Any) -> dict[str, Any]:
    """Define-by-run sampling: one suggestion per parameter of the space."""
    return {name: domain.suggest(trial, name) for name, domain in space.params.items()}


def vit_rel_from(base: NetSpec) -> NetSpec:
    """A ViT-REL counterpart of a base spec: a patch stem with the stride of the base's S3,
    then all of the base's blocks as relative-attention blocks at its S3 width."""
    strides = [base.stem.stride] + [s.stride for s in base.stages]
    patch = math.prod(strides[: min(4, len(strides))])
    # the first attention stage's width, or S3's (where C-C-T-T starts attending) without one
    t_stages = [s for s in base.stages if s.kind == "T"] or [base.stages[min(2, len(base.stages) - 1)]]
    head_dim = t_stages[0].head_dim
    width = round_to_multiple(t_stages[0].channels, head_dim)
    data = base.to_dict()
    data["stem"] = {"kind": "patch", "channels": width, "stride": patch, "norm": "layer"}
    data["stages"] = [
        {
            "kind": "T", "blocks": sum(s.blocks for s in base.stages), "channels": width,
            "stride": 1, "head_dim": head_dim, "attention": "relative",
        }
    ]
    data["allow_any_order"] = False
    return NetSpec.from_dict(data)


def _apply_layout(spec: NetSpec, layout: str) -> NetSpec:
    if layout.lower() in ("vit-rel", "vit_rel", "vit"):
        return vit_rel_from(spec)
    kinds = layout.upper().split("-")
    if len(kinds) != len(spec.stages):
        raise SpecError(f"layout: {layout} has {len(kinds)} stages, the base has {len(spec.stages)}")
    stages = []
    for stage, kind in zip(spec.stages, kinds):
        data = stage.model_dump(mode="json")
        data["kind"] = kind
        if kind == "T":
            data["channels"] = round_to_multiple(stage.channels, stage.head_dim)
        stages.append(data)
    return spec.with_stages(stages)


def _apply_split(spec: NetSpec, s2_blocks: int, total: int | None) -> NetSpec:
    if len(spec.stages) < 3:
        raise SpecError("split: needs S2 and S3")
    total = total or spec.stages[1].blocks + spec.stages[2].blocks
    s3_blocks = total - int(s2_blocks)
    if s3_blocks < 1 or s2_blocks < 1:
        raise SpecError(f"split: S2={s2_blocks} leaves S3={s3_blocks} of {total} blocks")
    stages = [s.model_dump(mode="json") for s in spec.stages]
    stages[1]["blocks"], stages[2]["blocks"] = int(s2_blocks), s3_blocks
    return spec.with_stages(stages)


def _apply_stage_field(spec: NetSpec, kind: str | None, field_name: str, value: Any) -> NetSpec:
    stages = []
    for stage in spec.stages:
        data = stage.model_dump(mode="json")
        if kind is None or stage.kind == kind:
            data[field_name] = value
            if field_name == "head_dim":
                data["channels"] = round_to_multiple(stage.channels, int(value))
        stages.append(data)
    return spec.with_stages(stages)


def _apply_path(spec: NetSpec, path: str, value: Any) -> NetSpec:
    data = spec.to_dict()
    match = _INDEXED.match(path)
    if match:
        index, name = int(match.group(1)), match.group(2)
        if index >= len(data["stages"]):
            raise SpecError(f"{path}: the base has {len(data['stages'])} stages")
        data["stages"][index][name] = value
    elif path.startswith("stem."):
        data["stem"][path.split(".", 1)[1]] = value
    else:
        data[path] = value
    return NetSpec.from_dict(data)


def scale(spec: NetSpec, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0) -> NetSpec:
    """Multiply blocks of S2 onward, every width, and the image size."""
    data = spec.to_dict()
    data["stem"]["channels"] = round_to_multiple(spec.stem.channels * width, 8)
    stages = []
    for i, stage in enumerate(spec.stages):
        d = stage.model_dump(mode="json")
        if i >= 1:
            d["blocks"] = max(1, math.ceil(stage.blocks * depth))
        multiple = math.lcm(8, stage.head_dim) if stage.kind == "T" else 8
        d["channels"] = round_to_multiple(stage.channels * width, multiple)
        stages.append(d)
    data["stages"] = stages
    data["image_size"] = round_to_multiple(spec.image_size * resolution, spec.total_stride)
    return NetSpec.from_dict(data)


def apply_params(space: SearchSpace, params: dict[str, Any]) -> tuple[NetSpec, dict[str, Any]]:
    """The spec and training settings a parameter set describes (before budget matching)."""
    spec = space.base_spec()
    train = dict(space.train)
    if "layout" in params:
        spec = _apply_layout(spec, str(params["layout"]))
    if "split" in params:
        spec = _apply_split(spec, int(params["split"]), space.split_total)
    for name, value in params.items():
        if name.startswith(("train.", "data.")):
            if name.startswith("train."):
                train[name.split(".", 1)[1]] = value
        elif name not in ("layout", "split") and name not in _STAGE_KNOBS and name not in _SCALE_KNOBS and name != "seed":
            spec = _apply_path(spec, name, value)
    for name, (kind, field_name) in _STAGE_KNOBS.items():
        if name in params:
            spec = _apply_stage_field(spec, kind, field_name, params[name])
    depth = float(params.get("depth_multiplier", 1.0))
    width = float(params.get("width_multiplier", 1.0))
    resolution = float(params.get("resolution_multiplier", 1.0))
    if "phi" in params:
        phi = float(params["phi"])
        depth *= space.scaling.alpha**phi
        width *= space.scaling.beta**phi
        resolution *= space.scaling.gamma**phi
    if (depth, width, resolution) != (1.0, 1.0, 1.0):
        spec = scale(spec, depth, width, resolution)
    if "seed" in params:
        train["seed"] = int(params["seed"])
    return spec, train


_STAGE_KNOBS = {
    "head_dim": ("T", "head_dim"),
    "attention": ("T", "attention"),
    "ffn_expansion": ("T", "expansion"),
    "norm": ("C", "norm"),
    "mbconv_expansion": ("C", "expansion"),
}
_SCALE_KNOBS = ("depth_multiplier", "width_multiplier", "resolution_multiplier", "phi")


def make_candidate(space: SearchSpace, params: dict[str, Any]) -> Candidate:
    """Apply parameters, match the budget, count. Raises `InfeasibleCandidate`."""
    from coatsearch.budget import BudgetError, match_budget
    from coatsearch.flops import count_analytic

    try:
        spec, train = apply_params(space, params)
    except (SpecError, TypeError, ValueError) as exc:
        raise InfeasibleCandidate(str(exc)) from None
    note = ""
    budget = space.budget
    if budget is not None and budget.target is not None:
        metric, value = budget.target
        try:
            match = match_budget(
                spec, **{metric: value}, by=budget.by, tolerance=budget.tolerance, strict=True
            )
        except (BudgetError, SpecError) as exc:
            raise InfeasibleCandidate(str(exc)) from None
        spec, note = match.spec, match.message
    counts = count_analytic(spec)
    if budget is not None:
        for metric, bounds in (("flops", budget.flops_range), ("params", budget.params_range)):
            value = getattr(counts, metric)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise InfeasibleCandidate(f"{metric} {value:.3g} outside [{bounds[0]:.3g}, {bounds[1]:.3g}]")
    data = {name.split(".", 1)[1]: value for name, value in params.items() if name.startswith("data.")}
    return Candidate(
        params=dict(params), spec=spec, flops=counts.flops, n_params=counts.params,
        train=train, data=data, budget_note=note,
    )
