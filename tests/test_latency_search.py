"""Latency in searches: ``budget: {latency_ms, batch}`` matches each candidate's widths to a
predicted latency (infeasible when no width reaches it), and the ``latency_ms`` objective
is predicted from the space's ``latency_profile`` instead of timed beside other trials."""

from __future__ import annotations

import pytest
from conftest import TINY_SPACE, tiny_spec

from coatsearch.budget import BudgetError
from coatsearch.budget.scaler import Scaler
from coatsearch.latency import LatencyError, Profile, conditions, predict
from coatsearch.latency.budget import AIM, match_latency
from coatsearch.latency.units import FEATURES
from coatsearch.search import compile_space
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.space import SearchSpace, SpaceError

SPEC = tiny_spec("C-C-T-T", image_size=16)
#: every unit's predicted time proportional to its multiply-adds: 1 ms per million
MACS = ("conv1x1", "conv_kxk", "depthwise", "linear", "attention")
LINEAR = {kind: [float(name in MACS) for name in FEATURES] for kind in ("stem", "C", "T", "head")}


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "profile.json"
    Profile(conditions(), "2026-01-01", fits=LINEAR).save(path)
    return path


@pytest.mark.slow
def test_widths_are_matched_to_a_predicted_latency():
    profile = Profile(conditions(), "2026-01-01", fits=LINEAR)
    wider = SPEC.scaled(width=1.5)  # a latency one width factor reaches exactly
    matched, got = match_latency(SPEC, predict(wider, 1, profile), 1, profile, tolerance=0.05)
    assert got == pytest.approx(predict(wider, 1, profile), rel=0.05) and predict(matched, 1, profile) == got
    assert matched.stages[-1].channels > SPEC.stages[-1].channels
    with pytest.raises(BudgetError, match=r"latency_ms: no width .* within 5% of 1e-06 ms"):
        match_latency(SPEC, 1e-6, 1, profile)


@pytest.mark.slow
def test_widths_one_multiple_off_reach_a_latency_one_factor_steps_over():
    profile = Profile(conditions(), "2026-01-01", fits=LINEAR)
    scaler = Scaler(SPEC, "flops")
    one_factor = sorted({predict(scaler.build(scaler.widths(f / 400, scaler.original.blocks)), 1, profile)
                         for f in range(100, 1200)})
    step, below, above = max((b / a, a, b) for a, b in zip(one_factor, one_factor[1:]))
    target = (below * above) ** 0.5
    assert step > 1 + 2 * AIM  # every one-factor width misses this target by more than AIM
    matched, got = match_latency(SPEC, target, 1, profile)
    assert abs(got / target - 1) <= AIM and predict(matched, 1, profile) == pytest.approx(got)


def _space(**changes) -> SearchSpace:
    base = {k: v for k, v in TINY_SPACE.items() if k != "budget"}
    return SearchSpace.model_validate({**base, **changes})


def test_a_latency_budget_needs_a_profile_made_here(profile_path, tmp_path):
    with pytest.raises(SpaceError, match="budget.latency_ms: needs latency_profile"):
        compile_space(_space(budget={"latency_ms": 5}), check_data=False)
    other = tmp_path / "other.json"
    Profile({**conditions(), "torch": "0.1"}, "2026-01-01", fits=LINEAR).save(other)
    with pytest.raises(SpaceError, match=r"latency_profile: .*torch '0.1'"):
        compile_space(_space(budget={"latency_ms": 5}, latency_profile=str(other)), check_data=False)
    at_one = tmp_path / "batch1.json"
    Profile(conditions(), "2026-01-01", fits=LINEAR, scale={"1": 1.0}, overhead_ms={"1": 0.0}).save(at_one)
    with pytest.raises(SpaceError, match="latency_profile: batch: .*calibrated at batch 1, not 8"):
        compile_space(_space(budget={"latency_ms": 5, "batch": 8}, latency_profile=str(at_one)), check_data=False)
    with pytest.raises(ValueError, match="latency_ms: a latency target is matched alone"):
        _space(budget={"latency_ms": 5, "flops": "1M"})


def test_a_search_predicts_at_the_profiles_own_thread_count(tmp_path):
    """A profile for 1 thread (a batch-1 deployment) serves a search whose process runs more."""
    from coatsearch.latency.profile import load_checked

    one_thread = tmp_path / "one-thread.json"
    Profile({**conditions(), "threads": conditions()["threads"] + 7}, "2026-01-01", fits=LINEAR).save(one_thread)
    with pytest.raises(LatencyError, match="threads"):  # a prediction asked for here, at this process's threads
        Profile.load(one_thread).check()
    assert load_checked(str(one_thread)).conditions["threads"] == conditions()["threads"] + 7


@pytest.mark.slow
def test_candidates_meet_the_latency_budget_or_are_infeasible(profile_path):
    profile = Profile.load(profile_path)
    plan = compile_space(_space(budget={"latency_ms": 3, "tolerance": 0.1}, latency_profile=str(profile_path)),
                         check_data=False)
    candidate = plan.candidate({"split": 1})
    assert predict(candidate.spec, 1, profile) == pytest.approx(3, rel=0.1)
    assert "predicted" in candidate.budget_note
    with pytest.raises(InfeasibleCandidate, match="latency_ms: no width"):
        _unreachable(plan)
    # a grid none of whose points reaches the target trains nothing: refused when compiled
    with pytest.raises(SpaceError, match="latency_ms: no width"):
        compile_space(_space(budget={"latency_ms": 1e-4}, latency_profile=str(profile_path)), check_data=False)


def _unreachable(plan):
    from dataclasses import replace

    budget = plan.space.budget.model_copy(update={"latency_ms": 1e-4})
    return replace(plan, space=plan.space.model_copy(update={"budget": budget})).candidate({"split": 1})


@pytest.mark.slow
def test_the_latency_objective_is_predicted_from_the_profile(profile_path):
    from coatsearch.search.trial import run_trial

    space = _space(objectives=["val_acc", "latency_ms"], latency_profile=str(profile_path),
                   train={"epochs": 1, "steps": 2, "batch_size": 32})
    plan = compile_space(space, check_data=False)
    row = run_trial(plan, 0, {"split": 1})
    assert row.status == "complete", row.reason
    trained = plan.candidate({"split": 1}).spec.replace(in_channels=1)  # as the data adapted it (grey images)
    assert row.latency_ms == pytest.approx(predict(trained, 1, Profile.load(profile_path)))
