"""Budget matching: the Figure 1 family at CoAtNet-0's cost, tiny specs, impossible targets."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from coatsearch import NetSpec, load_spec, preset
from coatsearch.budget import BudgetError, match_budget, parse_count
from coatsearch.cli import app
from coatsearch.flops import count_analytic

COATNET_0 = dict(blocks=[2, 2, 3, 5, 2], channels=[64, 96, 192, 384, 768], head_hidden=768)


def figure_1_family() -> dict[str, NetSpec]:
    """The paper's layouts at CoAtNet-0's blocks and widths, and ViT-REL."""
    family = {
        layout: NetSpec.from_layout(layout, **COATNET_0, name=layout)
        for layout in ("C-C-C-C", "C-C-C-T", "C-T-T-T")
    }
    return {**family, "vit-rel": preset("vit-rel")}


def search_spec(layout: str = "C-C-T-T", channels: tuple[int, ...] = (32, 32, 64, 128, 256)) -> NetSpec:
    """A search-sized network: 32x32 images, stride-1 stem."""
    return NetSpec.from_layout(layout, [1, 1, 2, 2, 1], list(channels), image_size=32, num_classes=10)


def assert_valid_widths(spec: NetSpec) -> None:
    assert spec.stem.channels % 8 == 0
    for stage in spec.stages:
        assert stage.channels % 8 == 0
        if stage.kind == "T":
            assert stage.channels % stage.head_dim == 0


@pytest.mark.parametrize("name", list(figure_1_family()))
def test_figure_1_family_matches_coatnet_0_flops_within_1_percent(name):
    target = count_analytic(preset("coatnet-0")).flops
    spec = figure_1_family()[name]
    # ViT-REL has one stage of width 384, moving in steps of 32: width alone moves its
    # FLOPs by ~17% a step, so its depth moves too.
    result = match_budget(spec, flops=target, by="both" if name == "vit-rel" else "width")
    assert result.within_tolerance, result.message
    assert abs(result.flops / target - 1) <= 0.01
    assert result.relative_error == pytest.approx(result.flops / target - 1)
    counts = count_analytic(result.spec)
    assert (counts.flops, counts.params) == (result.flops, result.params)
    assert result.spec.layout == spec.layout
    assert_valid_widths(result.spec)
    if name != "vit-rel":
        assert [s.blocks for s in result.spec.stages] == [s.blocks for s in spec.stages]


def test_width_scaling_keeps_the_ratio_between_stages():
    spec = preset("coatnet-0")
    result = match_budget(spec, flops="2G")
    assert result.within_tolerance
    # (old width, new width, rounding multiple) of the stem and every stage
    widths = [(spec.stem.channels, result.spec.stem.channels, 8)] + [
        (old.channels, new.channels, 32 if old.kind == "T" else 8)
        for old, new in zip(spec.stages, result.spec.stages)
    ]
    factor = sorted(new / old for old, new, _ in widths)[len(widths) // 2]
    assert factor < 0.8
    # every width within a rounding step or so of one common factor
    assert all(abs(new - factor * old) <= 2 * q for old, new, q in widths), widths
    assert result.spec.head_hidden == result.spec.stages[-1].channels  # stays tied to S4
    assert result.spec.name == "coatnet-0@2.00G-flops"


def test_matching_a_spec_to_its_own_cost_returns_it_unchanged():
    spec = preset("coatnet-0")
    result = match_budget(spec, flops=count_analytic(spec).flops)
    assert result.spec == spec and result.relative_error == 0


def test_vit_rel_width_matching_keeps_stem_and_stage_tied_and_multiples_of_head_dim():
    spec = preset("vit-rel")
    result = match_budget(spec, flops="3G")
    assert result.spec.stem.channels == result.spec.stages[0].channels
    assert_valid_widths(result.spec)


@pytest.mark.parametrize("target", [12e6, 60e6])
def test_a_search_sized_spec_matches_a_tiny_flop_target(target):
    result = match_budget(search_spec(), flops=target)
    assert result.within_tolerance, result.message
    assert_valid_widths(result.spec)
    assert result.spec.image_size == 32 and result.spec.layout == "C-C-T-T"


def test_narrow_specs_that_width_alone_cannot_match_are_matched_with_depth():
    spec = search_spec("C-C-C-C", (16, 16, 32, 64, 128))
    targets = [10e6 * 10 ** (i / 10) for i in range(11)]  # 10M..100M
    results = [match_budget(spec, flops=t, by="both") for t in targets]
    assert all(r.within_tolerance for r in results), [r.message for r in results]


def test_parameter_target():
    result = match_budget(preset("coatnet-0"), params="15M")
    assert result.metric == "params" and result.within_tolerance
    assert abs(result.params / 15e6 - 1) <= 0.01


def test_depth_scaling_grows_only_the_middle_stages():
    spec = preset("coatnet-1")
    result = match_budget(spec, flops=count_analytic(spec).flops * 0.7, by="depth")
    old, new = spec.stages, result.spec.stages
    assert (new[0].blocks, new[3].blocks) == (old[0].blocks, old[3].blocks)
    assert new[1].blocks < old[1].blocks and new[2].blocks < old[2].blocks
    assert [s.channels for s in new] == [s.channels for s in old]
    assert preset("coatnet-6").depth_stages == {1, 2, 3}  # S2, S3a, S3b
    assert preset("vit-rel").depth_stages == {0}


def _with_blocks(spec: NetSpec, s2: int, s3: int) -> NetSpec:
    stages = list(spec.stages)
    stages[1] = stages[1].model_copy(update={"blocks": s2})
    stages[2] = stages[2].model_copy(update={"blocks": s3})
    return spec.with_stages(stages)


def test_a_depth_match_needing_fractional_blocks_returns_the_closest_and_says_so():
    spec = preset("coatnet-0")  # S2/S3 = 3/5; scaling both by one factor, 3/6 comes next
    low, high = count_analytic(spec).flops, count_analytic(_with_blocks(spec, 3, 6)).flops
    target = (low + high) / 2
    result = match_budget(spec, flops=target, by="depth")
    assert not result.within_tolerance
    assert [s.blocks for s in result.spec.stages][1:3] in ([3, 5], [3, 6])
    assert "misses the 1% tolerance" in result.message and "whole numbers" in result.message
    assert abs(result.relative_error) == pytest.approx((high - low) / 2 / target, rel=1e-9)
    with pytest.raises(BudgetError, match="misses the 1% tolerance"):
        match_budget(spec, flops=target, by="depth", strict=True)
    # a looser tolerance accepts it
    assert match_budget(spec, flops=target, by="depth", tolerance=0.05).within_tolerance


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(flops=-1e9), "flops: the target must be a positive number"),
        (dict(flops=0), "flops: the target must be a positive number"),
        (dict(params=math.nan), "params: the target must be a positive number"),
        (dict(flops="1K"), "flops: target 1.00K is below the smallest spec width scaling reaches"),
        (dict(flops="1M", by="depth"), "flops: target 1.00M is below the smallest spec depth"),
        (dict(flops=1e15), "flops: target 1000.00T is above the sanity bound"),
        (dict(params="1T"), "params: target 1.00T is above the sanity bound"),
        (dict(flops="4G", params=-1), "params: the target must be a positive number"),
        (dict(), "budget: give a target, flops or params (got neither)"),
        (dict(flops="4.2X"), "flops: expected a number with an optional K/M/G/B/T suffix"),
        (dict(flops="4G", by="height"), "by: expected 'width', 'depth', 'both' or 'ratios'"),
        (dict(flops="4G", tolerance=0), "tolerance: expected a fraction between 0 and 1"),
    ],
)
def test_impossible_targets_raise_one_line(kwargs, message):
    with pytest.raises(BudgetError) as info:
        match_budget(preset("coatnet-0"), **kwargs)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text,value",
    [("4.2G", 4.2e9), ("25M", 25e6), ("1.5B", 1.5e9), ("300k", 3e5), ("1e9", 1e9), (" 7 ", 7.0), ("2T", 2e12)],
)
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "G", "4.2X", "four", "1..2M"])
def test_parse_count_rejects_what_is_not_a_number(text):
    with pytest.raises(BudgetError, match="--flops: expected a number"):
        parse_count(text, "--flops")


# ---------------------------------------------------------------- command line
runner = CliRunner()


def test_cli_match_writes_a_spec_within_tolerance(tmp_path):
    source = tmp_path / "net.yaml"
    source.write_text(search_spec().to_yaml())
    out = tmp_path / "matched.yaml"
    result = runner.invoke(app, ["match", str(source), "--flops", "40M", "-o", str(out)])
    assert result.exit_code == 0, result.output
    matched = load_spec(out)
    assert abs(count_analytic(matched).flops / 40e6 - 1) <= 0.01
    assert "for a target of 40.00M" in result.stdout


def test_cli_flops_shows_both_routes(tmp_path):
    source = tmp_path / "net.yaml"
    source.write_text(search_spec().to_yaml())
    result = runner.invoke(app, ["flops", str(source), "--by-op"])
    assert result.exit_code == 0, result.output
    assert "analytic FLOPs" in result.stdout and "traced FLOPs" in result.stdout
    assert "scaled_dot_product_attention" in result.stdout and "+0.000%" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--flops", "4.x2G"], "error: --flops: expected a number"),
        (["--flops", "-3G"], "error: flops: the target must be a positive number"),
        (["--flops", "1K"], "error: flops: target 1.00K is below the smallest spec"),
        (["--params", "5T"], "error: params: target 5.00T is above the sanity bound"),
        (["--flops", "3G", "--by", "height"], "error: by: expected"),
        (["--flops", "4.17G", "--strict"], "error: flops: 3.89G FLOPs for a target of 4.17G"),
    ],
)
def test_cli_bad_targets_exit_2_with_one_line(args, message):
    result = runner.invoke(app, ["match", "vit-rel", *args])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _layouts_base() -> NetSpec:
    """The layouts study's base: C-C-C-C 1/2/3/1 at 24/48/96/192, S3 on 8x8 tokens at 32 px."""
    return NetSpec.from_dict({
        "image_size": 32, "num_classes": 10, "stem": {"kind": "conv", "channels": 24, "stride": 1},
        "stages": [{"kind": "C", "blocks": 1, "channels": 24, "stride": 1},
                   {"kind": "C", "blocks": 2, "channels": 48},
                   {"kind": "C", "blocks": 3, "channels": 96, "head_dim": 32},
                   {"kind": "C", "blocks": 1, "channels": 192, "head_dim": 32}]})


@pytest.mark.parametrize("layout", ["C-C-C-T", "C-C-T-T", "C-T-T-T", "vit-rel"])
def test_joint_matching_keeps_the_bases_depth_when_a_shape_near_it_fits(layout):
    from coatsearch.budget.both import depth_distance as _depth_distance

    base = _layouts_base()
    spec = base.as_vit_rel() if layout == "vit-rel" else base.with_layout(layout)
    match = match_budget(spec, flops="40M", params="600k", tolerance=0.05)
    assert match.within_tolerance
    # FLOPs and params both grow as depth x width^2, so shapes from 1 block up meet both
    # targets: the one kept is the nearest the base's depth among those that fit
    chosen = _depth_distance(spec, [s.blocks for s in match.spec.stages])
    for factor in (0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0):
        deeper = spec.scaled(depth=factor)
        try:
            other = match_budget(deeper, flops="40M", by="width", tolerance=0.05)
        except BudgetError:
            continue
        if abs(other.params / 600e3 - 1) <= 0.05:
            other_distance = _depth_distance(spec, [s.blocks for s in other.spec.stages])
            assert chosen <= other_distance + 1e-9, (layout, other.message, match.message)
    middle = [s.blocks for s in match.spec.stages][1:3] if layout != "vit-rel" else [match.spec.stages[0].blocks]
    assert sum(middle) >= 3  # not the degenerate one-block shapes the closest-to-both search chose


#: A doubling base whose attention stages round widths to multiples of 32.
DOUBLING = NetSpec.from_layout("C-C-T-T", [1, 1, 2, 3, 1], [32, 32, 64, 128, 256], image_size=32, num_classes=10,
                               head_dim=32)


def test_the_ratio_ladder_keeps_every_width_on_its_multiple():
    from coatsearch.budget.ratios import ratio_widths
    from coatsearch.budget.scaler import Scaler

    ladder = ratio_widths(Scaler(DOUBLING, "flops"))[:3]
    assert ladder == [(8, 16, 32, 64), (16, 32, 64, 128), (24, 48, 96, 192)]  # S3 and S4 on multiples of 32


@pytest.mark.parametrize("target", ["40M", "150M"])
def test_matching_by_ratios_keeps_the_doubling_and_reports_the_params(target):
    flops = parse_count(target)
    result = match_budget(DOUBLING, flops=flops, params="600k", by="ratios", tolerance=0.05)
    widths = [s.channels for s in result.spec.stages]
    assert [b / a for a, b in zip(widths, widths[1:])] == [2.0, 2.0, 2.0]
    assert result.within_tolerance and abs(result.flops / flops - 1) <= 0.05
    assert "params" in result.errors and "not matched" in result.message


def test_matching_by_ratios_keeps_the_bases_depth_where_a_ladder_width_meets_the_target():
    narrower = DOUBLING.scaled(width=0.5)  # 16/32/64/128: on the ladder
    flops = count_analytic(narrower).flops * 1.02
    result = match_budget(DOUBLING, flops=flops, by="ratios", tolerance=0.05)
    assert [s.blocks for s in result.spec.stages] == [s.blocks for s in DOUBLING.stages]
    assert [s.channels for s in result.spec.stages] == [s.channels for s in narrower.stages]


def test_matching_by_ratios_needs_a_flop_target_and_checks_the_params_it_reports():
    with pytest.raises(BudgetError, match="by: 'ratios' meets a FLOP target"):
        match_budget(DOUBLING, params="600k", by="ratios")
    with pytest.raises(BudgetError, match="params: the target must be a positive number"):
        match_budget(DOUBLING, flops="40M", params="-5", by="ratios")
    with pytest.raises(BudgetError, match=r"below the narrowest shape that keeps the widths' ratios \(1.64M FLOPs at stem 8"):
        match_budget(DOUBLING, flops="100k", by="ratios")


def test_a_space_can_keep_the_doubling_while_it_matches_flops():
    from coatsearch.search import compile_space
    from coatsearch.space import space_from_dict

    space = {"study": "doubling", "base": DOUBLING.to_dict(), "params": {"layout": {"choices": ["C-C-T-T", "C-T-T-T"]}},
             "budget": {"flops": "40M", "by": "ratios", "tolerance": 0.05}, "train": {"epochs": 1}, "trials": 2,
             "sampler": "grid"}
    plan = compile_space(space_from_dict(space), check_data=False)
    for params in plan.grid:
        widths = [s.channels for s in plan.candidate(params).spec.stages]
        assert all(b == 2 * a for a, b in zip(widths, widths[1:])), widths
