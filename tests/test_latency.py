"""The latency model (`coatsearch.latency`): networks cut into units whose keys networks
share, predictions that sum a profile's units (its fits for units it never timed), and
profiles from elsewhere refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_spec
from typer.testing import CliRunner

from coatsearch.flops import count_analytic
from coatsearch.latency import LatencyError, Profile, calibrate, conditions, predict, random_specs
from coatsearch.latency.units import FEATURES, features, units

SPEC = tiny_spec("C-C-T-T", image_size=16)


def test_a_network_is_its_stem_blocks_and_head():
    found = units(SPEC, 1)
    assert [u.kind for u in found] == ["stem", *(s.kind for s in SPEC.stages for _ in range(s.blocks)), "head"]
    # the units count the network's FLOPs, the analytic count's to the unit
    assert sum(u.flops for u in found) == count_analytic(SPEC).flops


def test_a_units_work_grows_with_the_batch_and_its_weights_do_not():
    one, eight = units(SPEC, 1), units(SPEC, 8)
    weights, constant = FEATURES.index("weights"), FEATURES.index("constant")
    for a, b in zip(one, eight):
        assert b.features[weights] == a.features[weights] > 0 and b.features[constant] == a.features[constant] == 1
        work = [k for k in range(len(FEATURES)) if k not in (weights, constant)]
        assert [b.features[k] for k in work] == pytest.approx([8 * a.features[k] for k in work])
    # attention work appears only in attention blocks, depthwise work only in MBConv blocks
    by_kind = {u.kind: dict(zip(FEATURES, u.features)) for u in one}
    assert by_kind["T"]["attention"] > 0 and by_kind["C"]["attention"] == 0
    assert by_kind["C"]["depthwise"] > 0 and by_kind["T"]["depthwise"] == 0


def test_only_a_downsampling_block_reads_a_larger_input():
    found = units(SPEC, 1)[1:-1]
    blocks = [(stage, b) for stage in SPEC.stages for b in range(stage.blocks)]
    at = FEATURES.index("downsampled")
    for unit, (stage, b) in zip(found, blocks):
        assert (unit.features[at] > 0) == (b == 0 and stage.stride == 2), unit.key


def test_a_units_key_and_features_need_no_network_but_its_module_sees_the_networks_input():
    meta, real = units(SPEC, 2), units(SPEC, 2, "cpu")
    assert [u.key for u in meta] == [u.key for u in real] and all(u.module is None for u in meta)
    assert real[0].x.shape == (2, SPEC.in_channels, SPEC.image_size, SPEC.image_size)
    assert real[-1].x.shape[1] == SPEC.stages[-1].channels


def test_networks_share_the_units_they_have_in_common():
    wider_head = SPEC.replace(num_classes=100)
    a, b = units(SPEC, 1), units(wider_head, 1)
    assert [u.key for u in a[:-1]] == [u.key for u in b[:-1]] and a[-1].key != b[-1].key
    assert units(SPEC, 4)[0].key != a[0].key  # the batch is part of a unit


def _profile(**fields) -> Profile:
    return Profile(conditions(), "2026-01-01", **fields)


def test_a_prediction_sums_timed_units_fits_and_the_overhead():
    found = units(SPEC, 1)
    timed = {u.key: float(k + 1) for k, u in enumerate(found)}
    assert predict(SPEC, 1, _profile(units=timed, overhead_ms={"1": 0.5})) == pytest.approx(sum(timed.values()) + 0.5)
    fits = {u.kind: [0.1 * (k + 1) for k in range(len(FEATURES))] for u in found}
    expected = sum(float(np.dot(fits[u.kind], features(u))) for u in found)
    assert predict(SPEC, 1, _profile(fits=fits)) == pytest.approx(expected)
    scaled = _profile(units=timed, overhead_ms={"1": 0.5}, scale={"1": 1.5})
    assert predict(SPEC, 1, scaled) == pytest.approx(1.5 * sum(timed.values()) + 0.5)
    with pytest.raises(LatencyError, match="no T unit"):
        predict(SPEC, 1, _profile(fits={"stem": fits["stem"], "C": fits["C"], "head": fits["head"]}))
    with pytest.raises(LatencyError, match="3 coefficients where this version has"):  # a profile of other features
        predict(SPEC, 1, _profile(fits={kind: [1.0, 0.0, 0.0] for kind in fits}))


def test_a_profile_from_elsewhere_is_refused_or_warned_in_one_line(tmp_path):
    profile = _profile()
    assert profile.check() is None
    profile.conditions = {**profile.conditions, "torch": "1.0", "threads": 99}
    with pytest.raises(LatencyError, match=r"threads 99 \(here \d+\), torch '1.0'") as caught:
        profile.check()
    assert "\n" not in str(caught.value)
    with pytest.warns(UserWarning, match="torch '1.0'"):
        profile.check(strict=False)
    profile.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json") == profile
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(LatencyError, match="bad.json: not a latency profile"):
        Profile.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_calibrate_times_every_distinct_unit_once():
    specs = [SPEC, SPEC.replace(num_classes=100)]
    profile = calibrate(specs, [1], rounds=1, whole=1)
    assert len(profile.units) == len(units(SPEC, 1)) + 1  # one more head
    assert set(profile.fits) == {"stem", "C", "T", "head"} and "1" in profile.overhead_ms
    assert all(ms > 0 for ms in profile.units.values())
    assert predict(SPEC, 1, profile) > 0


def test_random_specs_span_sizes_and_layouts_and_repeat_for_a_seed():
    specs = random_specs(30, seed=5)
    assert specs == random_specs(30, seed=5)
    assert len({s.layout for s in specs}) >= 3 and {32, 224} & {s.image_size for s in specs}


def test_the_command_refuses_another_machines_profile(tmp_path):
    from coatsearch.cli import app

    path = tmp_path / "p.json"
    profile = _profile(fits={k: [1.0] * len(FEATURES) for k in ("stem", "C", "T", "head")})
    profile.save(path)
    (tmp_path / "spec.yaml").write_text(SPEC.to_yaml())
    ok = CliRunner().invoke(app, ["latency", "predict", str(tmp_path / "spec.yaml"), "--profile", str(path)])
    assert ok.exit_code == 0 and "ms predicted" in ok.output
    data = json.loads(path.read_text())
    data["conditions"]["device"] = "another CPU"
    path.write_text(json.dumps(data))
    refused = CliRunner().invoke(app, ["latency", "predict", str(tmp_path / "spec.yaml"), "--profile", str(path)])
    assert refused.exit_code == 2 and "device 'another CPU'" in refused.output
    warned = CliRunner().invoke(app, ["latency", "predict", str(tmp_path / "spec.yaml"), "--profile", str(path),
                                      "--allow-other"])
    assert warned.exit_code == 0 and "warning:" in warned.output


def test_the_command_predicts_at_the_profiles_thread_count_whatever_this_process_runs(tmp_path):
    """Nothing runs to predict, so a 1-thread profile serves a process with more threads."""
    from coatsearch.cli import app

    path = tmp_path / "p.json"
    threads = conditions()["threads"] + 7
    Profile({**conditions(), "threads": threads}, "2026-01-01",
            fits={k: [1.0] * len(FEATURES) for k in ("stem", "C", "T", "head")}).save(path)
    (tmp_path / "spec.yaml").write_text(SPEC.to_yaml())
    result = CliRunner().invoke(app, ["latency", "predict", str(tmp_path / "spec.yaml"), "--profile", str(path)])
    assert result.exit_code == 0 and f"{threads} threads (the profile's)" in result.output


def test_the_whole_network_fit_recovers_scale_and_overhead():
    from coatsearch.latency.model import whole_network_fit

    assert whole_network_fit([(10.0, 17.0), (20.0, 32.0), (40.0, 62.0)]) == pytest.approx((1.5, 2.0), rel=1e-3)
    assert whole_network_fit([(10.0, 12.5)]) == (1.0, 2.5)


def test_a_prediction_at_a_batch_the_profile_never_timed_is_refused():
    """Scale and overhead hold only at the batches they were fitted on."""
    profile = _profile(fits={kind: [1.0] * len(FEATURES) for kind in ("stem", "C", "T", "head")},
                       scale={"1": 1.2, "8": 1.1}, overhead_ms={"1": 0.1, "8": 0.2})
    assert predict(SPEC, 8, profile) > 0
    with pytest.raises(LatencyError, match="calibrated at batch 1, 8, not 4; calibrate with --batch 4"):
        predict(SPEC, 4, profile)


@pytest.mark.parametrize(("batches", "rounds", "field"), [([0], 3, "batch"), ([], 3, "batch"), ([1], 0, "rounds")])
def test_calibration_refuses_a_bad_batch_or_rounds_in_one_line(batches, rounds, field):
    with pytest.raises(LatencyError, match=f"^{field}: expected"):
        calibrate([SPEC], batches, rounds=rounds, whole=1)


def test_a_check_names_an_unknown_condition():
    with pytest.raises(LatencyError, match="compared: thread is not a condition"):
        _profile().check(compared=("device", "thread"))
