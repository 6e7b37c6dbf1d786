"""The run's display: one line per ended trial, epoch progress, an ETA from the start."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from coatsearch.search import compile_space
from coatsearch.search.progress import RunProgress, TrialEstimates, estimate_line, trial_line
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.space import space_from_dict
from coatsearch.status import Status
from tests.conftest import TINY_SPACE


@pytest.fixture(scope="module")
def plan():
    """A 3-point grid of the tiny space (compiled without reading its data)."""
    space = space_from_dict({**TINY_SPACE, "params": {"split": {"choices": [1, 2, 3]}}, "split_total": 4, "trials": 3})
    return compile_space(space, check_data=False)


def _estimates(plan, seconds=(10.0, 20.0, 30.0)):
    points = [point_key(p) for p in plan.grid_points[: plan.grid_walk]]
    return TrialEstimates(dict(zip(points, seconds)), sum(seconds) / len(seconds), "test")


def _progress(plan, estimates, rows=()):
    out = io.StringIO()
    log = logging.getLogger("coatsearch.test-progress")
    return RunProgress(plan, Console(file=out, width=200), list(rows), estimates, log), out


def _ended(plan, index, wall, acc=0.5, status=Status.COMPLETE):
    return TrialRow(trial=index, status=status, sampled=dict(plan.grid_points[index]), max_fidelity=2, fidelity=2,
                    val_acc=acc, wall_time=wall, layout="C-C-T-T", blocks="1,1,1,1", channels="8,16,32,32",
                    flops=1_200_000, params=50_000)


def test_the_eta_starts_from_the_estimate_and_scales_by_the_trials_that_ended(plan):
    progress, _ = _progress(plan, _estimates(plan))
    assert progress.eta_s() == pytest.approx(60.0)  # before any trial: the estimate itself
    progress.on_epoch(0, 1)  # half of trial 0 (estimated 10 s) trained
    assert progress.eta_s() == pytest.approx(60.0 - 20.0 / 2)  # in flight: the mean estimate's share
    # trial 0 took twice its estimate: the other two (20 s, 30 s) are expected to as well
    progress.on_rows([_ended(plan, 0, wall=20.0)])
    assert progress.eta_s() == pytest.approx(2 * (20.0 + 30.0))
    progress.on_rows([_ended(plan, 0, wall=20.0), _ended(plan, 1, wall=40.0), _ended(plan, 2, wall=60.0)])
    assert progress.eta_s() == 0.0


def test_without_an_estimate_the_eta_waits_for_a_trial_then_takes_their_mean(plan):
    progress, _ = _progress(plan, TrialEstimates())
    assert progress.eta_s() is None
    progress.on_rows([_ended(plan, 0, wall=12.0)])
    assert progress.eta_s() == pytest.approx(24.0)


def test_each_trial_that_ends_is_one_line_once_and_its_epoch_bar_goes(plan):
    progress, out = _progress(plan, _estimates(plan))
    with progress:
        progress.on_epoch(0, 0)
        assert len(progress.progress.tasks) == 2  # the run's bar and trial 0's epochs
        rows = [_ended(plan, 0, wall=75.0, acc=0.8125)]
        progress.on_rows(rows)
        progress.on_rows(rows)  # the same ledger again: no second line
    lines = [line for line in out.getvalue().splitlines() if line.startswith("trial ")]
    assert lines == ["trial 0 [split=1] C-C-T-T 1,1,1,1 8,16,32,32 1.2M FLOPs 0.05M params -> val acc 81.25% in 1m15s"]
    assert len(progress.progress.tasks) == 1


def test_a_trial_line_says_why_a_trial_did_not_complete(plan):
    failed = _ended(plan, 1, wall=3.0, acc=None, status=Status.FAILED).replace(reason="RuntimeError: boom")
    assert trial_line(failed, 2).endswith(": failed (RuntimeError: boom) in 3s")
    stopped = _ended(plan, 2, wall=5.0, acc=0.4, status=Status.STOPPED).replace(fidelity=1)
    assert "-> val acc 40.00% (stopped after epoch 1/2) in 5s" in trial_line(stopped, 2)
    infeasible = TrialRow(trial=3, status=Status.INFEASIBLE, sampled={"split": 3}, reason="no network within 1.2M")
    assert trial_line(infeasible, 2) == "trial 3 [split=3]: infeasible (no network within 1.2M)"


def test_the_first_estimate_line_sums_the_timed_trials(plan):
    line = estimate_line(_estimates(plan), trials=3, concurrency=1)
    assert line is not None and line.startswith("estimated: 3 trial(s), about 1m00s (test)")
    assert estimate_line(TrialEstimates(), 3, 1) is None
