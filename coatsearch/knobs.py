"""The knob registry: every name a search space may vary, and what it does to a trial.

A parameter of a space is one of:

- a *knob* below (``layout``, ``split``, ``head_dim``, ``phi``, ...): a named change to
  the network, applied through the spec's own transforms (`NetSpec.with_layout`,
  `NetSpec.map_stages`, `NetSpec.scaled`, ...), so every rule lives in one place;
- a *spec path* (``stages[1].blocks``, ``stem.channels``, ``drop_path``): one field;
- ``train.<setting>`` or ``data.<setting>``: a trainer or data setting of the trial;
- ``seed``: the trial's training seed (a grid over it repeats each configuration).

`apply_params` turns a parameter set into a `Draft` (spec, trainer and data settings) in a
fixed order: layout, split, spec paths, stage knobs, then one scaling step that multiplies
every scale knob's factors together (so depth, width and resolution are rounded once).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from coatsearch.budget import BudgetError
from coatsearch.flops import count_analytic
from coatsearch.scaling import RULES, scale
from coatsearch.spec import NetSpec, SpecError

#: The kinds of parameter, as `parameter_kind` names them.
KINDS = ("knob", "spec", "train", "data", "seed")


@dataclass(frozen=True)
class KnobContext:
    """What some knobs read from the space besides their value."""

    split_total: int | None = None
    alpha: float = 1.2  # compound scaling: depth alpha**phi
    beta: float = 1.1  # width beta**phi
    gamma: float = 1.15  # resolution gamma**phi


@dataclass(frozen=True)
class Scale:
    """Factors of one scaling step; factors of several knobs multiply."""

    width: float = 1.0
    depth: float = 1.0
    resolution: float = 1.0

    def __mul__(self, other: Scale) -> Scale:
        return Scale(self.width * other.width, self.depth * other.depth, self.resolution * other.resolution)


@dataclass(frozen=True)
class Knob:
    """One named change. Either ``apply`` (a spec transform, run in ``order``) or
    ``scale`` (factors for the final scaling step)."""

    doc: str
    apply: Callable[[NetSpec, Any, KnobContext], NetSpec] | None = None
    scale: Callable[[Any, KnobContext], Scale] | None = None
    order: int = 2


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _layout(spec: NetSpec, value: Any, ctx: KnobContext) -> NetSpec:
    if not isinstance(value, str):
        raise SpecError(f"layout: expected a layout string such as C-C-T-T or vit-rel, got {value!r}")
    if value.lower() in ("vit-rel", "vit_rel", "vit"):
        return spec.as_vit_rel()
    return spec.with_layout(value)


def _stages(kind: str, field_name: str) -> Callable[[NetSpec, Any, KnobContext], NetSpec]:
    def apply(spec: NetSpec, value: Any, ctx: KnobContext) -> NetSpec:
        return spec.map_stages(kind, **{field_name: value})  # type: ignore[arg-type]

    return apply


KNOBS: dict[str, Knob] = {
    "layout": Knob("stage kinds, e.g. C-C-T-T; vit-rel for the ViT-REL baseline; blocks and widths kept",
                   apply=_layout, order=0),
    "split": Knob("blocks of S2; S3 gets split_total (default S2 + S3 of the base) minus that",
                  apply=lambda s, v, c: s.with_split(v, c.split_total), order=1),
    "head_dim": Knob("head width of every T stage (widths move to the nearest multiple)",
                     apply=_stages("T", "head_dim"), order=3),
    "attention": Knob("relative or plain attention in every T stage", apply=_stages("T", "attention"), order=3),
    "ffn_expansion": Knob("FFN ratio of every T stage", apply=_stages("T", "expansion"), order=3),
    "norm": Knob("batch or layer norm in every C stage", apply=_stages("C", "norm"), order=3),
    "mbconv_expansion": Knob("inverted-bottleneck ratio of every C stage", apply=_stages("C", "expansion"), order=3),
    "depth_multiplier": Knob("blocks of the middle stages (S2, S3) times the value",
                             scale=lambda v, c: Scale(depth=_positive_number("depth_multiplier", v))),
    "width_multiplier": Knob("every width times the value (stem and pre-logits ties kept)",
                             scale=lambda v, c: Scale(width=_positive_number("width_multiplier", v))),
    "resolution_multiplier": Knob("the image size times the value (rounded to the total stride)",
                                  scale=lambda v, c: Scale(resolution=_positive_number("resolution_multiplier", v))),
    "rule": Knob("the scaling rule `scale` uses: coatnet, compound, depth, width or resolution (coatsearch.scaling)",
                 order=9),
    "scale": Knob("FLOPs as a multiple of the base network's, reached by `rule` (default coatnet) after the other knobs",
                  order=9),
    "phi": Knob("compound scaling: depth alpha**phi, width beta**phi, resolution gamma**phi (scaling:)",
                scale=lambda v, c: Scale(width=c.beta ** _number("phi", v), depth=c.alpha ** _number("phi", v),
                                         resolution=c.gamma ** _number("phi", v))),
}


def parameter_kind(name: str, data_fields: Collection[str] | None = None) -> str | None:
    """``knob``, ``spec``, ``train``, ``data`` or ``seed`` for a parameter name; None when
    the name means nothing. ``data_fields`` lists the data settings a space has (None:
    take any ``data.`` name)."""
    if name == "seed":
        return "seed"
    if name in KNOBS:
        return "knob"
    if name.startswith("train.") and len(name) > 6:
        return "train"
    if name.startswith("data."):
        return "data" if data_fields is None or name[5:] in data_fields else None
    return "spec" if NetSpec.has_field(name) else None


@dataclass(frozen=True)
class Draft:
    """What a parameter set describes, before any budget: the spec and the trial's
    trainer and data settings (overrides of the space's)."""

    spec: NetSpec
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def apply_params(base: NetSpec, params: dict[str, Any], ctx: KnobContext = KnobContext()) -> Draft:
    """Apply a parameter set to ``base``; raises `SpecError` for a value that does not apply."""
    spec = base
    train: dict[str, Any] = {}
    data: dict[str, Any] = {}
    knobs = sorted((KNOBS[n].order, n) for n in params if n in KNOBS and KNOBS[n].apply is not None)
    early = [n for order, n in knobs if order < 2]
    late = [n for order, n in knobs if order >= 2]
    for name in early:
        spec = KNOBS[name].apply(spec, params[name], ctx)  # type: ignore[misc]
    for name, value in params.items():
        kind = parameter_kind(name)
        if kind == "spec":
            spec = spec.with_field(name, value)
        elif kind == "train":
            train[name[6:]] = value
        elif kind == "data":
            data[name[5:]] = value
        elif kind == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**32 - 1:
                raise SpecError(f"seed: expected a whole number from 0 to {2**32 - 1}, got {value!r}")
            train["seed"] = value
    for name in late:
        spec = KNOBS[name].apply(spec, params[name], ctx)  # type: ignore[misc]
    scale = Scale()
    for name, value in params.items():
        knob = KNOBS.get(name)
        if knob is not None and knob.scale is not None:
            scale = scale * knob.scale(value, ctx)
    if scale != Scale():
        spec = spec.scaled(width=scale.width, depth=scale.depth, resolution=scale.resolution)
    if "scale" in params or "rule" in params:
        spec = _by_rule(base, spec, params.get("scale", 1), params.get("rule", "coatnet"))
    return Draft(spec, train, data)


def _by_rule(base: NetSpec, spec: NetSpec, multiple: Any, rule: Any) -> NetSpec:
    """``spec`` grown by ``rule`` to ``multiple`` times the *base* network's FLOPs, so every
    layout at one ``scale`` has the same budget."""
    if not isinstance(rule, str) or rule not in RULES:
        raise SpecError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    target = _positive_number("scale", multiple) * count_analytic(base).flops
    try:
        return scale(spec, rule, flops=target, tolerance=0.02).spec
    except BudgetError as exc:
        raise SpecError(str(exc)) from None
