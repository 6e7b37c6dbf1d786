"""Spec transforms, the knob registry and the trial row: one rule for each change."""

from __future__ import annotations

import pytest

from coatsearch import CoatsearchError, NetSpec, SpecError, count_analytic, preset
from coatsearch.budget import match_budget
from coatsearch.knobs import KNOBS, KnobContext, apply_params, parameter_kind
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.spec import make_divisible
from coatsearch.status import FINISHED, Status
from tests.conftest import tiny_spec


def test_make_divisible_rounds_to_the_nearest_multiple_half_up():
    assert [make_divisible(v, 8) for v in (3, 11.9, 12, 12.1, 20, 100)] == [8, 8, 16, 16, 24, 104]


def test_width_scaling_keeps_the_pre_logits_tied_to_s4():
    wide = preset("coatnet-0").scaled(width=2.0)
    assert [s.channels for s in wide.stages] == [192, 384, 768, 1536]
    assert wide.head_hidden == 1536 and wide.stem.channels == 128


def test_width_scaling_rounds_every_width_to_its_multiple():
    spec = tiny_spec().map_stages("T", head_dim=48)
    scaled = spec.scaled(width=1.37)
    for stage in scaled.stages:
        assert stage.channels % stage.width_multiple == 0
    assert all(s.channels % 48 == 0 for s in scaled.stages if s.kind == "T")


def test_depth_scaling_grows_s2_and_s3_only_rounding_half_up():
    deeper = preset("coatnet-0").scaled(depth=1.5)  # blocks 2, 3, 5, 2 (S1..S4)
    assert [s.blocks for s in deeper.stages] == [2, 5, 8, 2]  # 4.5 -> 5, 7.5 -> 8


def test_the_depth_knob_and_depth_matching_follow_one_rule():
    base = preset("coatnet-0")
    knob = apply_params(base, {"depth_multiplier": 2.0}).spec
    matched = match_budget(base, flops=count_analytic(knob).flops, by="depth").spec
    assert [s.blocks for s in knob.stages] == [s.blocks for s in matched.stages] == [2, 6, 10, 2]


def test_stage_groups_make_a_mixed_stage_one_group():
    spec = preset("coatnet-6")
    assert spec.stage_groups == ((0,), (1,), (2, 3), (4,))
    assert spec.depth_stages == {1, 2, 3}
    assert spec.stage_names == ["S1", "S2", "S3a", "S3b", "S4"]


def test_layout_strings_round_trip_mixed_stages():
    spec = preset("coatnet-6")
    assert spec.layout == "C-C-C+T-T"
    again = NetSpec.from_layout(spec.layout, [2] + [s.blocks for s in spec.stages], [192] + [s.channels for s in spec.stages])
    assert again.layout == "C-C-C+T-T" and [s.stride for s in again.stages] == [2, 2, 2, 1, 2]
    assert spec.with_layout("C-C-T+T-T").layout == "C-C-T+T-T"
    with pytest.raises(SpecError, match="does not fit the base"):
        spec.with_layout("C-C-T-T")


def test_map_stages_moves_widths_to_the_new_head_dim():
    spec = tiny_spec().map_stages("T", head_dim=48)
    assert {s.head_dim for s in spec.stages if s.kind == "T"} == {48}
    assert {s.head_dim for s in spec.stages if s.kind == "C"} == {32}
    with pytest.raises(SpecError, match="head_dim: expected a positive whole number"):
        tiny_spec().map_stages("T", head_dim=0)


def test_split_moves_blocks_between_s2_and_s3():
    spec = tiny_spec().with_split(1, total=4)
    assert [s.blocks for s in spec.stages] == [1, 1, 3, 1]
    with pytest.raises(SpecError, match="from 1 to 3"):
        tiny_spec().with_split(4, total=4)


def test_knobs_apply_in_order_and_scale_once():
    base = tiny_spec()
    draft = apply_params(base, {"width_multiplier": 2.0, "layout": "C-T-T-T", "seed": 3, "train.lr": 0.01,
                                "data.train_size": 500, "stages[0].blocks": 2})
    assert draft.spec.layout == "C-T-T-T" and draft.spec.stages[0].blocks == 2
    assert draft.spec == base.with_layout("C-T-T-T").with_field("stages[0].blocks", 2).scaled(width=2.0)
    assert draft.train == {"seed": 3, "lr": 0.01} and draft.data == {"train_size": 500}
    # phi multiplies with the explicit multipliers into one scaling step
    ctx = KnobContext(alpha=2.0, beta=1.0, gamma=1.0)
    assert apply_params(base, {"phi": 1, "depth_multiplier": 1.5}, ctx).spec == base.scaled(depth=3.0)


def test_parameter_kinds():
    assert [parameter_kind(n) for n in ("layout", "seed", "train.lr", "data.train_size", "stages[1].blocks",
                                        "stem.channels", "drop_path", "colour", "stages[1].colour")] == [
        "knob", "seed", "train", "data", "spec", "spec", "spec", None, None]
    assert parameter_kind("data.colour", data_fields=("train_size",)) is None
    assert all(k.doc for k in KNOBS.values())


def test_every_input_error_is_a_coatsearch_error():
    from coatsearch import BudgetError, DataError, ReportError, SpaceError, TrainConfigError

    for kind in (SpecError, SpaceError, BudgetError, DataError, TrainConfigError, ReportError):
        assert issubclass(kind, CoatsearchError)


def test_a_trial_row_round_trips_through_records_and_json():
    row = TrialRow.begin(4, {"split": 2, "layout": "C-C-T-T"}, max_fidelity=3).replace(
        status="complete", fidelity=3, val_acc=0.91, flops=1200, params=77)
    assert row.status is Status.COMPLETE and row.finished
    record = row.to_record()
    assert record["params"] == 77 and record["param.split"] == 2 and record["status"] == "complete"
    assert TrialRow.from_record(record) == row == TrialRow.from_json(row.to_json())
    assert row.point == point_key({"layout": "C-C-T-T", "split": 2.0})


def test_statuses():
    assert {s.value for s in FINISHED} == {"complete", "stopped", "diverged", "failed"}
    assert not Status.INFEASIBLE.finished and not Status.INTERRUPTED.finished
    assert Status.COMPLETE == "complete"
