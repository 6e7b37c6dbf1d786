"""Scaling rules: grow (or shrink) a network to a cost, the way a family grows.

`scale(spec, rule, flops=...)` returns the spec a rule makes at a FLOP (or parameter)
target, such as ``"2x"`` (twice the spec's cost) or ``"64M"``. Rules:

- ``coatnet``: our rule, named for the family it imitates; the paper states no rule, only
  the CoAtNet-0..7 table. Widths keep their ratios (doubling S1 to S4), the stem stays no
  wider than S1, and depth grows in S2 and S3 only, keeping their ratio, as the table
  does. Unlike the table, depth and width grow together at every step, by the same
  factor (depth ``ratio**(1/3)``, then the width matched to the target, so width carries
  about two thirds of the cost). The paper's steps each move one dimension: CoAtNet-1 is
  CoAtNet-0 deeper (S2/S3 3/5 -> 6/14 blocks, widths kept), CoAtNet-2 and -3 are -1 wider
  (x1.33, then x1.5 more, depth kept). Over CoAtNet-0 to -3 as a whole (x8.3 FLOPs, x2
  width, x2.5 S2+S3 blocks) the two agree roughly; step by step ours is wider and
  shallower (`family_markdown` sets them side by side).
- ``compound``: EfficientNet's rule, depth ``alpha**phi``, width ``beta**phi``,
  resolution ``gamma**phi`` with ``phi = log2(target / cost)``. The constants are not
  EfficientNet-B0's: a small grid under this network's real analytic cost (attention
  grows with the 4th power of resolution, not the 2nd) picks the point whose cost per
  unit ``phi`` is closest to 2x with the three dimensions contributing most evenly, after
  rounding to whole blocks and to the image sizes the total stride allows (evaluated at
  ``phi = 3``, where a small network's rounding does not hide a dimension). A member is
  then the depth and image size (with the width matched to the target) whose realized
  factors sit nearest the rule's three (`_compound_member`); where a stride step costs
  more than a doubling leaves (32 px at stride 16), the image size stays and depth and
  width share the growth.
- ``depth``, ``width``, ``resolution``: one dimension only. Resolution moves in steps of
  the total stride, so it lands only as close as those steps allow (the error is stated).

Ladders of ``coatnet`` and ``compound`` never narrow: a member is nowhere smaller than the
member at half its target (`_ladder_member`, `_compound_member`).

`family(base, rule, steps)` is a base and ``steps`` members at twice the cost each, as the
paper's CoAtNet-0..3 table.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from coatsearch.budget import BudgetError, match_budget, parse_count
from coatsearch.flops import count_analytic
from coatsearch.registry import Registry
from coatsearch.spec import NetSpec
from coatsearch.units import format_count

#: ``(spec, metric, target, ratio, tolerance) -> (spec, factors, note)``: how a rule grows
#: ``spec`` to ``target`` of ``metric`` (``ratio``: target over the spec's own cost); the
#: factors it applied and a note for the user. `scale` counts the result and names it.
ScalingRule = Callable[[NetSpec, str, float, float, float], tuple[NetSpec, dict[str, float], str]]
#: Every scaling rule, by name (``scale(spec, rule)``, the ``rule`` knob, ``--rule``).
RULES: Registry[ScalingRule] = Registry("scaling rule")

#: The compound rule's grid of per-phi factors (depth alpha, width beta, resolution gamma),
#: each point evaluated at phi = COMPOUND_PHI.
COMPOUND_DEPTHS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)
COMPOUND_WIDTHS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)
COMPOUND_RESOLUTIONS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)
COMPOUND_PHI = 3
#: Depths the compound rule tries, per halving or doubling of ``alpha**phi``.
COMPOUND_DEPTH_STEPS = 4
#: Ladder rules: how many points between a member's own depth (and resolution) and the
#: previous step's `_ladder_member` tries, most grown first.
LADDER_POINTS = 12


@dataclass(frozen=True)
class Scaled:
    """What a rule made: the spec, its counts, and how far from the target it landed."""

    spec: NetSpec
    rule: str
    metric: str
    target: float
    flops: int
    params: int
    relative_error: float
    factors: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def image_size(self) -> int:
        return self.spec.image_size


def _cost(spec: NetSpec, metric: str) -> int:
    counts = count_analytic(spec)
    return counts.flops if metric == "flops" else counts.params


def parse_target(value: float | str, current: float, name: str) -> float:
    """``"2x"`` (a multiple of ``current``) or a count such as ``"64M"``."""
    if isinstance(value, str) and value.strip().lower().endswith("x"):
        try:
            multiple = float(value.strip()[:-1])
        except ValueError:
            raise BudgetError(f"{name}: expected a multiple such as 2x or a count such as 64M, got {value!r}") from None
        if not multiple > 0:
            raise BudgetError(f"{name}: a multiple must be positive, got {value!r}")
        return multiple * current
    return parse_count(value, name)


def scale(
    spec: NetSpec,
    rule: str = "coatnet",
    *,
    flops: float | str | None = None,
    params: float | str | None = None,
    tolerance: float = 0.01,
) -> Scaled:
    """``spec`` grown or shrunk by ``rule`` to a FLOP or parameter target (see the module)."""
    if rule not in RULES:
        raise BudgetError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    if (flops is None) == (params is None):
        raise BudgetError("scale: give one target, flops or params")
    metric = "flops" if flops is not None else "params"
    value = flops if flops is not None else params
    assert value is not None
    current = _cost(spec, metric)
    target = parse_target(value, current, metric)
    ratio = target / current
    out, factors, note = RULES[rule](spec, metric, target, ratio, tolerance)
    counts = count_analytic(out)
    achieved = counts.flops if metric == "flops" else counts.params
    if out.name and out.name != spec.name:
        out = out.replace(name=f"{spec.name}-{rule}-{format_count(target)}" if spec.name else None)
    return Scaled(spec=out, rule=rule, metric=metric, target=target, flops=counts.flops, params=counts.params,
                  relative_error=achieved / target - 1, factors=factors, note=note)


@RULES.register("coatnet")
def _coatnet(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float
             ) -> tuple[NetSpec, dict[str, float], str]:
    """The paper's ladder: depth grows by the cube root of the cost, the width takes the rest."""
    return _ladder_member(spec, "coatnet", metric, target, ratio, tolerance)


@RULES.register("compound")
def _compound(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float
              ) -> tuple[NetSpec, dict[str, float], str]:
    """EfficientNet's: depth alpha**phi, width beta**phi, resolution gamma**phi, each as
    nearly as whole blocks, stride steps and a matched width allow (`_compound_member`)."""
    out, factors, note = _compound_member(spec, metric, target, ratio, tolerance)
    return out, dict(factors), note


@RULES.register("depth")
def _depth(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float
           ) -> tuple[NetSpec, dict[str, float], str]:
    """The middle stages' blocks alone."""
    return _stem_no_wider_than_s1(_match(spec, metric, target, "depth", tolerance)), {}, ""


@RULES.register("width")
def _width(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float
           ) -> tuple[NetSpec, dict[str, float], str]:
    """Every width by one factor."""
    return _stem_no_wider_than_s1(_match(spec, metric, target, "width", tolerance)), {}, ""


@RULES.register("resolution")
def _resolution(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float
                ) -> tuple[NetSpec, dict[str, float], str]:
    """The image size alone (rounded to the total stride)."""
    out = _stem_no_wider_than_s1(_by_resolution(spec, metric, target))
    return out, {"resolution": out.image_size / spec.image_size}, ""


def _grow(spec: NetSpec, held: float) -> tuple[NetSpec, dict[str, float]]:
    """``spec`` grown by the coatnet rule's depth for a cost ratio of ``held`` (the
    target's ratio or less: `_ladder_member`), before its width is matched to the target."""
    depth = held ** (1 / 3)
    return spec.scaled(depth=depth), {"depth": depth}


def _ladder_member(spec: NetSpec, rule: str, metric: str, target: float, ratio: float, tolerance: float,
                   ) -> tuple[NetSpec, dict[str, float], str]:
    """A ``coatnet`` member that is nowhere smaller than the member at half its target (its
    ladder's previous step, down to a member within a factor of sqrt 2 of the spec's own
    cost): no narrower stage or stem, no fewer blocks.

    Why: the rule rounds depth first and gives the width what is left, so where rounding
    jumps a whole block the width must shrink to land on the target, and a ladder would
    narrow between steps. The depth is then held back, towards the previous step's, until
    the matched widths are no narrower; if none of those points will do, the previous
    step's own depth is kept and only its widths grow (the note says which)."""
    floor = None
    if ratio >= math.sqrt(2):
        floor = scale(spec, rule, tolerance=tolerance, **{metric: target / 2}).spec  # type: ignore[arg-type]
    for k in range(LADDER_POINTS):
        held = ratio * 2 ** (-k / (LADDER_POINTS - 1))
        grown, factors = _grow(spec, held)
        out = _stem_no_wider_than_s1(_match(grown, metric, target, "width", tolerance))
        if floor is None or _no_smaller(out, floor):
            note = f"depth held at x{held:.3f} of the cost so that no width narrows from the previous step" if k else ""
            return out, factors, note
    assert floor is not None
    return _widen_floor(floor, metric, target, tolerance, "", factors)


def _widen_floor(floor: NetSpec, metric: str, target: float, tolerance: float, note: str,
                 factors: dict[str, float] | None = None) -> tuple[NetSpec, dict[str, float], str]:
    """The previous step's depth and resolution, widened from its widths by one factor:
    a ladder's last resort when no point of its own grows without narrowing."""
    out = _stem_no_wider_than_s1(_match(floor, metric, target, "width", tolerance))
    kept = "the previous step's depth and resolution kept, only the width grown"
    if not _no_smaller(out, floor):  # widths one multiple off their nearest can still dip: keep the floor's
        stages = [s.model_copy(update={"channels": max(s.channels, f.channels)}) for s, f in zip(out.stages, floor.stages)]
        stem = out.stem.model_copy(update={"channels": max(out.stem.channels, floor.stem.channels)})
        out = NetSpec.from_dict(out.model_copy(update={"stages": tuple(stages), "stem": stem}).to_dict())
        kept = "the previous step's widths kept where the match would narrow them"
    return out, factors or {}, "; ".join(n for n in (note, kept) if n)


@functools.lru_cache(maxsize=256)
def _compound_member(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float,
                     ) -> tuple[NetSpec, dict[str, float], str]:
    """The compound member nearest its own three factors that meets the target and is
    nowhere smaller than the member at half the target.

    Why a choice: on a small network one block or one stride step is a large part of the
    factor ``alpha**phi`` or ``gamma**phi``, so rounding each alone and giving the width
    what is left can land far from ``beta**phi`` (and then narrow a ladder). Instead each
    depth from ``alpha**phi / 2`` to ``alpha**phi * 2`` (in COMPOUND_DEPTH_STEPS steps of
    the factor), at the two image sizes either side of ``gamma**phi``, has its width
    matched to the target; of those within ``tolerance`` and no smaller than the previous
    step, the one whose realized factors (blocks, each stage's width, image size) sit closest to
    the rule's (`_factor_distance`) is the member.
    Where none will do, the previous step's depth and resolution are kept and only the
    width grows, as `_ladder_member` does; without a previous step (a target within
    sqrt 2 of the spec's cost) the candidate nearest the target is returned and `scale`
    states its error.

    Cached: a ladder's member at 8x builds its 4x and 2x members as floors, and a family
    asks for each of them again."""
    alpha, beta, gamma, achieved = compound_constants(spec)
    phi = math.log2(ratio)
    factors = {"alpha": alpha, "beta": beta, "gamma": gamma, "phi": phi}
    note = (f"constants: alpha {alpha:g}, beta {beta:g}, gamma {gamma:g} (real cost x{achieved:.3f} per unit phi, "
            f"where alpha*beta^2*gamma^2 says {alpha * beta**2 * gamma**2:.3f})")
    floor = None
    if ratio >= math.sqrt(2):
        floor = scale(spec, "compound", tolerance=tolerance, **{metric: target / 2}).spec  # type: ignore[arg-type]
    stride = spec.total_stride
    exact = spec.image_size * gamma**phi
    sizes = sorted({max(stride, stride * math.floor(exact / stride)), max(stride, stride * math.ceil(exact / stride))})
    wanted = (alpha**phi, beta**phi, gamma**phi)
    tried: dict[tuple[tuple[int, ...], int], NetSpec] = {}
    for j in range(-COMPOUND_DEPTH_STEPS, COMPOUND_DEPTH_STEPS + 1):
        deeper = spec.scaled(depth=alpha**phi * 2 ** (j / COMPOUND_DEPTH_STEPS))
        for size in sizes:
            key = (tuple(s.blocks for s in deeper.stages), size)
            if key in tried:
                continue
            try:
                tried[key] = _stem_no_wider_than_s1(_match(deeper.replace(image_size=size), metric, target, "width",
                                                           tolerance))
            except BudgetError:
                continue

    def cost_error(out: NetSpec) -> float:
        return abs(_cost(out, metric) / target - 1)

    fitting = [out for out in tried.values()
               if cost_error(out) <= tolerance and (floor is None or _no_smaller(out, floor))]
    if fitting:
        best = min(fitting, key=lambda out: _factor_distance(spec, out, wanted))
        return best, factors, f"{note}; {_realized(spec, best)}"
    if floor is not None:
        return _widen_floor(floor, metric, target, tolerance, note, factors)
    if not tried:
        raise BudgetError(f"{metric}: compound reaches no network near {format_count(target)} from this spec")
    closest = min(tried.values(), key=lambda out: (cost_error(out), _factor_distance(spec, out, wanted)))
    return closest, factors, f"{note}; {_realized(spec, closest)}; the closest to the target, none within tolerance"


def _realized(base: NetSpec, grown: NetSpec) -> str:
    """The factors a member really grew by: blocks, mean width (geometric), image size."""
    depth, width, size = _realized_factors(base, grown)
    return f"realized: depth x{depth:.2f}, width x{width:.2f}, resolution x{size:.2f}"


def _realized_factors(base: NetSpec, grown: NetSpec) -> tuple[float, float, float]:
    depth = sum(s.blocks for s in grown.stages) / sum(s.blocks for s in base.stages)
    width = math.exp(sum(math.log(g.channels / b.channels) for g, b in zip(grown.stages, base.stages)) / len(base.stages))
    return depth, width, grown.image_size / base.image_size


def _factor_distance(base: NetSpec, grown: NetSpec, wanted: tuple[float, float, float]) -> float:
    """How far ``grown``'s realized depth, stage widths and resolution sit from the factors
    ``wanted``, in logs weighted 1, 2, 2 (how a convolution's cost grows with each: the
    exponents of alpha * beta^2 * gamma^2); every stage's width counts (averaged), so that
    a member grown evenly beats one whose matched widths grew in one stage and not in
    another."""
    depth, _, size = _realized_factors(base, grown)
    want_depth, want_width, want_size = wanted
    widths = [(2 * math.log(g.channels / b.channels / want_width)) ** 2 for g, b in zip(grown.stages, base.stages)]
    return math.log(depth / want_depth) ** 2 + sum(widths) / len(widths) + (2 * math.log(size / want_size)) ** 2


def _no_smaller(spec: NetSpec, floor: NetSpec) -> bool:
    """Every stage of ``spec`` at least as wide and deep as ``floor``'s, the stem as wide,
    the image as large."""
    return (spec.image_size >= floor.image_size and spec.stem.channels >= floor.stem.channels
            and all(s.channels >= f.channels and s.blocks >= f.blocks for s, f in zip(spec.stages, floor.stages)))


def _match(spec: NetSpec, metric: str, target: float, by: str, tolerance: float) -> NetSpec:
    kwargs = {"flops": target} if metric == "flops" else {"params": target}
    return match_budget(spec, by=by, tolerance=tolerance, **kwargs).spec  # type: ignore[arg-type]


def _stem_no_wider_than_s1(spec: NetSpec) -> NetSpec:
    s1 = spec.stages[0].channels
    return spec if spec.stem.channels <= s1 else spec.with_field("stem.channels", s1)


def _by_resolution(spec: NetSpec, metric: str, target: float) -> NetSpec:
    """The image size, in steps of the total stride, whose cost is closest to the target."""
    stride = spec.total_stride
    best, best_error = spec, abs(_cost(spec, metric) / target - 1)
    size = spec.image_size
    step = stride if _cost(spec, metric) < target else -stride
    while stride <= size + step <= 16 * max(spec.image_size, 224):
        size += step
        candidate = spec.replace(image_size=size)
        error = abs(_cost(candidate, metric) / target - 1)
        if error >= best_error:
            break
        best, best_error = candidate, error
    return best


@functools.lru_cache(maxsize=64)
def compound_constants(spec: NetSpec) -> tuple[float, float, float, float]:
    """``(alpha, beta, gamma, cost ratio per unit phi)`` for this network (see the module).

    Each grid point is evaluated at ``phi = COMPOUND_PHI`` and its cost ratio taken to the
    power ``1 / COMPOUND_PHI``: at ``phi = 1`` a small network's rounding (one block, one
    stride step of image size) would hide whole dimensions.
    """
    base = _cost(spec, "flops")
    best: tuple[float, float, float, float, float] | None = None
    for alpha, beta, gamma in itertools.product(COMPOUND_DEPTHS, COMPOUND_WIDTHS, COMPOUND_RESOLUTIONS):
        k = COMPOUND_PHI
        grown = spec.scaled(depth=alpha**k, width=beta**k, resolution=gamma**k)
        ratio = (_cost(grown, "flops") / base) ** (1 / k)
        # what each dimension really grew by, per unit phi, after rounding
        depth = (sum(s.blocks for s in grown.stages) / sum(s.blocks for s in spec.stages)) ** (1 / k)
        width = (grown.stages[-1].channels / spec.stages[-1].channels) ** (1 / k)
        size = (grown.image_size / spec.image_size) ** (1 / k)
        shares = [math.log(depth), 2 * math.log(width), 2 * math.log(size)]
        score = abs(math.log(ratio / 2)) * 10 + max(shares) - min(shares)
        if best is None or score < best[0]:
            best = (score, alpha, beta, gamma, ratio)
    assert best is not None
    return best[1], best[2], best[3], best[4]


def family(base: NetSpec, rule: str = "coatnet", steps: int = 3, factor: float = 2.0,
           tolerance: float = 0.01) -> list[Scaled]:
    """The base and ``steps`` members at ``factor`` times the cost each (from the base)."""
    if steps < 1:
        raise BudgetError(f"steps: expected at least 1, got {steps}")
    members = [scale(base, rule, flops="1x", tolerance=tolerance)]
    members += [scale(base, rule, flops=f"{factor**k}x", tolerance=tolerance) for k in range(1, steps + 1)]
    return members


def family_markdown(base: NetSpec, rule: str = "coatnet", steps: int = 3) -> str:
    """The family of a CoAtNet preset beside the paper's CoAtNet-0..steps (README table)."""
    from coatsearch.presets import PAPER_FLOPS, PAPER_PARAMS, preset

    lines = ["| member | blocks S1–S4 | widths S1–S4 | FLOPs | params | paper | blocks | widths | FLOPs | params |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, member in enumerate(family(base, rule, steps)):
        paper = preset(f"coatnet-{k}")
        lines.append(
            f"| ×{2**k} | {'/'.join(str(s.blocks) for s in member.spec.stages)} | "
            f"{'/'.join(str(s.channels) for s in member.spec.stages)} | {format_count(member.flops)} | "
            f"{format_count(member.params)} | CoAtNet-{k} | {'/'.join(str(s.blocks) for s in paper.stages)} | "
            f"{'/'.join(str(s.channels) for s in paper.stages)} | {format_count(PAPER_FLOPS[f'coatnet-{k}'])} | "
            f"{format_count(PAPER_PARAMS[f'coatnet-{k}'])} |"
        )
    return "\n".join(lines)
