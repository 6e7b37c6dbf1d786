"""Scaling rules, families, matching FLOPs and params together, and the dry run."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from coatsearch import BudgetError, NetSpec, count_analytic, match_budget, preset
from coatsearch.cli import app
from coatsearch.knobs import apply_params
from coatsearch.scaling import RULES, _factor_distance, compound_constants, family, scale
from tests.conftest import tiny_spec

runner = CliRunner()
SMALL = NetSpec.from_layout("C-C-T-T", [1, 1, 1, 2, 1], [16, 16, 32, 64, 128], image_size=32, num_classes=10,
                            head_dim=16)


def test_the_coatnet_rule_doubles_coatnet_0_keeping_its_shape():
    base = preset("coatnet-0")
    result = scale(base, "coatnet", flops="2x")
    spec = result.spec
    assert abs(result.flops / (2 * count_analytic(base).flops) - 1) <= 0.03
    assert [spec.stages[0].blocks, spec.stages[-1].blocks] == [2, 2]  # S1 and S4 keep their blocks
    assert spec.stages[1].blocks > 3 and spec.stages[2].blocks > 5  # S2 and S3 grow
    for before, after in zip(base.stages, spec.stages):  # widths keep their ratios to S1
        assert after.channels / spec.stages[0].channels == pytest.approx(
            before.channels / base.stages[0].channels, abs=after.width_multiple / spec.stages[0].channels)
    assert spec.stem.channels <= spec.stages[0].channels and spec.head_hidden == spec.stages[-1].channels


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_lands_on_the_budget_as_closely_as_its_steps_allow(rule):
    target = 4 * count_analytic(SMALL).flops
    result = scale(SMALL, rule, flops=target)
    spec = result.spec
    if rule == "resolution":  # whole stride steps: the closest image size
        assert spec.image_size % SMALL.total_stride == 0
        neighbours = [spec.replace(image_size=spec.image_size + d) for d in (-SMALL.total_stride, SMALL.total_stride)]
        assert all(abs(count_analytic(n).flops / target - 1) >= abs(result.relative_error) for n in neighbours)
    else:
        assert abs(result.relative_error) <= 0.03, result
    if rule == "depth":
        assert [s.channels for s in spec.stages] == [s.channels for s in SMALL.stages]
    if rule == "width":
        assert [s.blocks for s in spec.stages] == [s.blocks for s in SMALL.stages]


def _no_smaller(spec: NetSpec, floor: NetSpec) -> bool:
    return (spec.image_size >= floor.image_size and spec.stem.channels >= floor.stem.channels
            and all(s.channels >= f.channels and s.blocks >= f.blocks for s, f in zip(spec.stages, floor.stages)))


#: The scaling studies' C-C-T-T base: 16..128 channels at 32 px, where one block or one
#: 16-px step of resolution is a large share of the cost.
STUDY_BASE = NetSpec.from_dict({
    "image_size": 32, "num_classes": 10, "stem": {"kind": "conv", "channels": 16, "stride": 1},
    "stages": [{"kind": "C", "blocks": 1, "channels": 16, "head_dim": 16}, {"kind": "C", "blocks": 1, "channels": 32, "head_dim": 16},
               {"kind": "T", "blocks": 2, "channels": 64, "head_dim": 16}, {"kind": "T", "blocks": 1, "channels": 128, "head_dim": 16}]})


@pytest.mark.parametrize("base", [SMALL, STUDY_BASE, preset("coatnet-0")], ids=["small", "study", "coatnet-0"])
@pytest.mark.parametrize("rule", ["coatnet", "compound"])
def test_a_ladder_never_narrows_between_steps(rule, base):
    members = family(base, rule, steps=3, tolerance=0.02)
    for before, after in zip(members, members[1:]):
        assert _no_smaller(after.spec, before.spec), (rule, before.spec.to_dict(), after.spec.to_dict())
        assert after.flops / before.flops == pytest.approx(2.0, rel=0.1)
    # the same members where a study's `scale` knob asks for them one by one
    for k, member in enumerate(members):
        alone = apply_params(base, {"rule": rule, "scale": 2**k}).spec
        assert [s.channels for s in alone.stages] == [s.channels for s in member.spec.stages]


def test_compound_grows_its_own_way_not_the_coatnet_rules():
    # at 32 px a stride step (x1.5) costs more than a doubling leaves; compound once held
    # its depth back to the coatnet rule's and built that rule's networks at 4x and 8x
    alpha, beta, gamma, _ = compound_constants(STUDY_BASE)
    for k in (2, 3):
        compound = scale(STUDY_BASE, "compound", flops=f"{2**k}x", tolerance=0.02)
        coatnet = scale(STUDY_BASE, "coatnet", flops=f"{2**k}x", tolerance=0.02)
        assert compound.spec != coatnet.spec and abs(compound.relative_error) <= 0.02
        wanted = (alpha**k, beta**k, gamma**k)
        assert _factor_distance(STUDY_BASE, compound.spec, wanted) < _factor_distance(STUDY_BASE, coatnet.spec, wanted)
        assert "realized: depth x" in compound.note


def test_compound_moves_resolution_where_the_stride_steps_allow_it():
    finer = STUDY_BASE.with_field("stages[0].stride", 1)  # total stride 8: 32, 40, 48 px
    members = family(finer, "compound", steps=3, tolerance=0.02)
    sizes = [m.spec.image_size for m in members]
    assert sizes[-1] > sizes[0] and sizes == sorted(sizes)
    assert sum(s.blocks for s in members[-1].spec.stages) > sum(s.blocks for s in finer.stages)
    assert members[-1].spec.stages[-1].channels > finer.stages[-1].channels


def test_a_compound_member_keeps_the_previous_steps_depth_when_nothing_else_will_do(monkeypatch):
    import coatsearch.scaling as scaling

    grown = scale(STUDY_BASE, "compound", flops="4x", tolerance=0.02)
    monkeypatch.setattr(scaling, "_no_smaller", lambda spec, floor: False)  # every point of every step refused
    scaling._compound_member.cache_clear()  # members are cached: build them again under the patch
    try:
        four = scale(STUDY_BASE, "compound", flops="4x", tolerance=0.02)
        two = scale(STUDY_BASE, "compound", flops="2x", tolerance=0.02)
    finally:
        scaling._compound_member.cache_clear()  # none built under the patch outlives the test
    assert "previous step's" in four.note and "realized" not in four.note
    assert [s.blocks for s in four.spec.stages] == [s.blocks for s in two.spec.stages] == [s.blocks for s in STUDY_BASE.stages]
    assert [s.blocks for s in grown.spec.stages] != [s.blocks for s in four.spec.stages]
    assert four.spec.image_size == STUDY_BASE.image_size and abs(four.relative_error) <= 0.05


def test_a_ladder_member_keeps_the_previous_steps_depth_when_no_held_point_will_do(monkeypatch):
    import coatsearch.scaling as scaling

    real = scaling._grow

    def too_deep(spec, held):  # every point of the 4x step (held 4 down to 2; and the 2x step's first) far deeper
        grown, factors = real(spec, held)
        return (grown.scaled(depth=8.0) if held > 1.99 else grown), factors

    monkeypatch.setattr(scaling, "_grow", too_deep)
    four, two = scale(STUDY_BASE, "coatnet", flops="4x", tolerance=0.02), scale(STUDY_BASE, "coatnet", flops="2x", tolerance=0.02)
    assert "previous step's depth and resolution kept" in four.note and _no_smaller(four.spec, two.spec)
    assert [s.blocks for s in four.spec.stages] == [s.blocks for s in two.spec.stages]
    assert abs(four.relative_error) <= 0.05


def test_compound_constants_are_chosen_under_the_real_cost():
    alpha, beta, gamma, per_phi = compound_constants(preset("coatnet-0"))
    assert per_phi == pytest.approx(2.0, rel=0.05)
    assert min(alpha, beta, gamma) > 1.0  # all three dimensions grow at 224 px
    note = scale(preset("coatnet-0"), "compound", flops="2x").note
    assert f"alpha {alpha:g}" in note and "per unit phi" in note


def test_a_family_doubles_at_each_step():
    members = family(SMALL, "coatnet", steps=3)
    flops = [m.flops for m in members]
    assert flops[0] == count_analytic(SMALL).flops
    for a, b in zip(flops, flops[1:]):
        assert b / a == pytest.approx(2.0, rel=0.08)


def test_matching_flops_and_params_together():
    c0 = count_analytic(preset("coatnet-0"))
    cccc = NetSpec.from_layout("C-C-C-C", [2, 2, 3, 5, 2], [64, 96, 192, 384, 768], head_hidden=768)
    match = match_budget(cccc, flops=c0.flops, params=c0.params, tolerance=0.03)
    assert match.within_tolerance and match.spec.layout == "C-C-C-C"
    assert abs(match.errors["flops"]) <= 0.03 and abs(match.errors["params"]) <= 0.03
    assert match.errors["flops"] == pytest.approx(match.flops / c0.flops - 1)


def test_an_impossible_pair_says_so():
    spec = preset("coatnet-0")
    counts = count_analytic(spec)
    match = match_budget(spec, flops=counts.flops, params=counts.params * 20, tolerance=0.03)
    assert not match.within_tolerance and "no spec of this layout meets both" in match.message
    tiny = tiny_spec()  # strict refuses the same way; on a small spec its search takes a second
    tiny_counts = count_analytic(tiny)
    with pytest.raises(BudgetError, match="meets both"):
        match_budget(tiny, flops=tiny_counts.flops, params=tiny_counts.params * 20, tolerance=0.03, strict=True)


def test_scale_as_a_knob_gives_every_layout_the_same_budget():
    target = 2 * count_analytic(SMALL).flops
    for layout in ("C-C-C-C", "C-C-T-T", "C-T-T-T"):
        spec = apply_params(SMALL, {"layout": layout, "scale": 2}).spec
        assert spec.layout == layout and abs(count_analytic(spec).flops / target - 1) <= 0.03
    deeper = apply_params(SMALL, {"rule": "depth", "scale": 4}).spec
    assert [s.channels for s in deeper.stages] == [s.channels for s in SMALL.stages]


def test_table7_dry_run_lists_the_three_networks():
    result = runner.invoke(app, ["run", "spaces/table7.yaml", "--dry-run", "--json"])
    # no ImageNet here: the candidates, no estimate, and the run's own stop in one line
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: spaces/table7.yaml: data.source: /data/imagenet: no such directory; a run would stop here (no time estimated)"]
    out = json.loads(result.stdout)
    rows = out["candidates"]
    assert out["estimated_run_s"] is None
    blocks = {r["params"]["split"]: r["blocks"] for r in rows}
    assert blocks == {6: "2,6,14,2", 2: "2,2,18,2", 8: "2,8,12,2"}
    assert all(r["channels"] == "128,256,512,1024" and r["image_size"] == 224 for r in rows)
    v0 = next(r for r in rows if r["params"]["split"] == 6)
    assert v0["flops"] == count_analytic(preset("coatnet-2")).flops  # V0 is CoAtNet-2 itself


def test_dry_run_of_a_sampled_space_lists_trials_candidates(tmp_path):
    import yaml

    from tests.conftest import TINY_SPACE

    space = dict(TINY_SPACE, sampler="random", trials=4, params={"width_multiplier": {"low": 1.0, "high": 2.0}})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)
    rows = out["candidates"]
    assert len(rows) == 4 and all(r["status"] in ("ok", "infeasible") for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["estimated_s"] > 0 for r in ok) and out["estimated_run_s"] > 0
    assert out["estimate_basis"].startswith("rough")
    assert not (tmp_path / "runs").exists()


def test_scale_and_family_commands(tmp_path):
    result = runner.invoke(app, ["scale", "coatnet-0", "--rule", "coatnet", "--flops", "2x", "--json",
                                 "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert math.isclose(record["flops"] / record["target"], 1, abs_tol=0.03)
    assert NetSpec.from_yaml((tmp_path / "out.yaml").read_text()).to_dict() == record["spec"]
    result = runner.invoke(app, ["family", "coatnet-0", "--steps", "2", "--json", "-o", str(tmp_path / "fam")])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3
    assert len(list((tmp_path / "fam").glob("*.yaml"))) == 3
    bad = runner.invoke(app, ["scale", "coatnet-0", "--rule", "magic", "--flops", "2x"])
    assert bad.exit_code == 2 and "rule: expected one of" in bad.stderr


def test_the_docs_family_table_is_generated():
    from pathlib import Path

    from coatsearch.scaling import family_markdown

    page = (Path(__file__).resolve().parent.parent / "docs" / "scaling.md").read_text()
    assert family_markdown(preset("coatnet-0")) in page
