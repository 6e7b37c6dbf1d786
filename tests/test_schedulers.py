"""The early-stopping schedulers beyond ASHA: Hyperband's brackets, multi-objective
successive halving, learning-curve extrapolation; the same rules on the replay backend,
and settings a scheduler cannot run refused in one line before any trial."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.search import compile_space
from coatsearch.search.curves import Curve, CurveStopper, predict
from coatsearch.search.hyperband import Hyperband
from coatsearch.search.moasha import MoAsha, nondominated_ranks, promoted
from coatsearch.search.rungs import Asha, Course, judge
from coatsearch.space import SpaceError, space_from_dict
from coatsearch.status import Status
from tests.conftest import TINY_SPACE
from tests.test_replay import TABLE_SPACE, make_table, replay
from tests.test_search import no_leaked_ray  # noqa: F401  (a fixture: Ray is shut down after the test)


def _course(number: int, values: list[float], flops: float = 1.0) -> Course:
    return Course(number, tuple(values), tuple((v, -flops) for v in values), (-flops,))


# ----------------------------------------------------------------------------- hyperband
def test_hyperband_brackets_start_later_and_meet_only_their_own() -> None:
    band = Hyperband(1, 2, 8)
    assert band.count == 4 and [b.rungs for b in band.brackets] == [[1, 2, 4], [2, 4], [4], []]
    numbers = range(400)
    counts = np.bincount([band.bracket_of(n) for n in numbers], minlength=4)
    assert (counts > 0).all() and counts[0] > counts[3]  # weighted as Optuna weighs them
    first = next(n for n in numbers if band.bracket_of(n) == 0)
    mates = [_course(n, [0.9]) for n in numbers if band.bracket_of(n) == 0 and n != first][:4]
    strangers = [_course(n, [0.9]) for n in numbers if band.bracket_of(n) == 1][:4]
    assert band.judge(_course(first, [0.1]), mates).stop
    assert not band.judge(_course(first, [0.1]), strangers).stop  # another bracket's trials are not its peers


def test_hyperband_one_bracket_is_asha() -> None:
    band, asha = Hyperband(1, 2, 8, brackets=1), Asha(1, 2, 8)
    peers = [_course(n, [0.2 * k for k in range(1, 4)]) for n in range(6)]
    for value in (0.1, 0.5):
        trial = _course(99, [value, value])
        assert band.judge(trial, peers).stop == judge(asha, trial, peers).stop


# ----------------------------------------------------------------------------- MO-ASHA
def test_nondominated_sorting_ranks_fronts() -> None:
    points = np.array([[0.9, -2.0], [0.8, -1.0], [0.7, -2.0], [0.6, -3.0]])
    assert list(nondominated_ranks(points)) == [0, 0, 1, 2]
    assert promoted(points, 2).tolist() == [True, True, False, False]


def test_moasha_keeps_a_small_network_that_asha_stops() -> None:
    peers = [_course(n, [0.8, 0.85], flops=10.0) for n in range(3)] + [_course(3, [0.5], flops=10.0)]
    small = Course(9, (0.4,), ((0.4, -1.0),), (-1.0,))
    assert judge(Asha(1, 2, 4), small, peers).stop
    assert not MoAsha(1, 2, 4).judge(small, peers).stop
    big_and_bad = Course(9, (0.4,), ((0.4, -20.0),), (-20.0,))
    assert MoAsha(1, 2, 4).judge(big_and_bad, peers).stop


# ----------------------------------------------------------------------------- curves
def test_the_families_extrapolate_a_saturating_curve() -> None:
    x = np.arange(1, 21)
    curve = 0.9 - 0.5 * x ** -0.8
    mean, sd = predict(curve[:8].tolist(), 20)  # type: ignore[misc]
    assert abs(mean - curve[-1]) < 0.02 and sd > 0
    assert predict([0.5], 20) is None  # no family fits one epoch, and no reference was given


def test_references_carry_the_shape_of_finished_curves() -> None:
    shape = np.array([0.3, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.86])  # a schedule's late rise
    refs = [(shape + d).tolist() for d in (-0.1, 0.0, 0.1, 0.2)]
    mean, _ = predict((shape[:2] + 0.05).tolist(), 8, refs, families=())  # type: ignore[misc]
    assert mean == pytest.approx(0.91, abs=0.03)


def _fits_as_fast(loss: float) -> Curve:
    """Curves alike in their first two epochs whose final accuracy follows how low their
    training loss already is (the distance below 1 as a power of the loss)."""
    final = 1 - 0.2 * loss**1.5
    return Curve((0.4, 0.55, 0.6, 0.65, 0.7, 0.75, 0.78, final), tuple((loss, 1.0) for _ in range(8)), (-1e6,))


def test_the_learned_prior_reads_how_fast_a_network_fits() -> None:
    references = [_fits_as_fast(loss) for loss in np.linspace(0.2, 1.5, 16)]
    trial = _fits_as_fast(0.45)
    for loss in (0.45, 1.3):
        own = _fits_as_fast(loss)
        prior, sd = predict(own.values[:2], 8, references, ceiling=1.0, signals=own.signals[:2],  # type: ignore[misc]
                            statics=own.statics, groups=("regression",))
        assert prior == pytest.approx(own.values[-1], abs=0.01) and sd < 0.03
        # the finished curves alone cannot tell these apart (their first epochs are the
        # same); the ensemble, weighing the prior by its smaller error, mostly can
        carried, _ = predict(own.values[:2], 8, references, ceiling=1.0, groups=("references",))  # type: ignore[misc]
        assert carried == pytest.approx(0.924, abs=0.01)
        mean, _ = predict(own.values[:2], 8, references, ceiling=1.0, signals=own.signals[:2],  # type: ignore[misc]
                          statics=own.statics)
        assert abs(mean - own.values[-1]) < abs(carried - own.values[-1]) / 5 + 0.005
    # too few finished curves for its features: no prior, and no prediction without other groups
    assert predict(trial.values[:2], 8, references[:4], ceiling=1.0, signals=trial.signals[:2],
                   statics=trial.statics, groups=("regression",)) is None


def test_the_learned_prior_is_not_extrapolated_to_a_network_unlike_the_finished_ones() -> None:
    """Finished trials all of one size: a far larger network is predicted within their
    finals' range, with a wide interval, so the stopper does not act on it."""
    references = [dataclasses.replace(_fits_as_fast(loss), statics=(-1e6 * (1 + 0.01 * k),))
                  for k, loss in enumerate(np.linspace(0.2, 1.5, 16))]
    near, far = (dataclasses.replace(_fits_as_fast(0.45), statics=(size,)) for size in (-1.05e6, -1e9))
    finals = [r.values[-1] for r in references]
    sds = []
    for trial in (near, far):
        mean, sd = predict(trial.values[:2], 8, references, ceiling=1.0, signals=trial.signals[:2],  # type: ignore[misc]
                           statics=trial.statics, groups=("regression",))
        assert min(finals) - 0.01 <= mean <= max(finals) + 0.01
        sds.append(sd)
    assert sds[1] > 5 * sds[0]


def test_a_course_carries_each_epochs_losses_from_the_history() -> None:
    from coatsearch.search.rows import Epoch
    from coatsearch.search.rungs import Courses

    plan = compile_space(space_from_dict({**TABLE_SPACE, "early_stopping": {"kind": "curve"}}), check_data=False)
    history = [Epoch(val_acc=0.5, train_loss_running=1.2, val_loss=1.4), {"val_acc": 0.6, "train_loss_running": 0.9}]
    course = Courses(plan).of(3, history, {"flops": 10, "params": 2})
    assert course.signals == ((1.2, 1.4), (0.9, None)) and course.values == (0.5, 0.6)


def test_the_curve_stopper_reads_the_courses_signals() -> None:
    """A course's training loss reaches the prediction: two trials alike in accuracy so
    far, one fitting its training data far more slowly, are predicted apart."""
    stopper = CurveStopper(grace=2, max_epochs=8, threshold=0.05, top=1, sign=1.0, ceiling=1.0)
    finished = [Course(n, c.values, (), c.statics, c.signals) for n, c in
                enumerate(_fits_as_fast(loss) for loss in np.linspace(0.2, 1.5, 16))]
    fast, slow = (Course(99, c.values[:2], (), c.statics, c.signals[:2]) for c in (_fits_as_fast(0.3), _fits_as_fast(1.4)))
    fast_mean, _ = stopper.prediction(fast, finished)  # type: ignore[misc]
    slow_mean, _ = stopper.prediction(slow, finished)  # type: ignore[misc]
    assert fast_mean - slow_mean > 0.2


def test_the_curve_stopper_stops_a_hopeless_trial_and_records_its_prediction() -> None:
    shape = [0.3, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.86]
    stopper = CurveStopper(grace=2, max_epochs=8, threshold=0.05, top=1, sign=1.0)
    finished = [_course(n, [v + 0.02 * n for v in shape]) for n in range(4)]
    verdict = stopper.judge(_course(9, [0.1, 0.2]), finished)
    assert verdict.stop and verdict.epoch == 2 and verdict.prediction is not None and verdict.prediction < 0.7
    assert not stopper.judge(_course(9, [0.1]), finished).stop  # before grace_period
    assert not stopper.judge(_course(9, [0.1, 0.2]), []).stop  # nothing to beat yet
    assert not stopper.judge(_course(9, [0.4, 0.6]), finished).stop  # may still win
    # with FLOPs an objective, the smallest network has nothing to beat: it joins the front
    small = Course(9, (0.1, 0.2), ((0.1, -0.5), (0.2, -0.5)), (-0.5,))
    assert not stopper.judge(small, finished).stop


# ----------------------------------------------------------------------------- on the replay
@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("tables") / "fixture")


@pytest.mark.parametrize("early, objectives", [
    ({"kind": "hyperband", "reduction_factor": 2}, ["val_acc"]),
    ({"kind": "moasha", "reduction_factor": 2}, ["val_acc", "flops"]),
    ({"kind": "curve", "grace_period": 2, "threshold": 0.2}, ["val_acc", "flops"]),
])
def test_each_scheduler_stops_trials_on_the_replay(table: Path, tmp_path: Path, early: dict,
                                                   objectives: list[str]) -> None:
    rows = replay(table, tmp_path / early["kind"], sampler="random", trials=24, early_stopping=early,
                  objectives=objectives)
    stopped = [r for r in rows if r.status == Status.STOPPED]
    assert stopped and all(0 < r.fidelity < r.max_fidelity for r in stopped)
    assert any(r.status == Status.COMPLETE and r.fidelity == r.max_fidelity for r in rows)
    if early["kind"] == "curve":
        predicted = [r for r in rows if r.curve_prediction is not None]
        assert predicted and all(r.curve_sd and r.curve_sd > 0 and 2 <= (r.curve_epoch or 0) < 4 for r in predicted)
        assert all(r.curve_epoch == r.fidelity for r in stopped)
    else:
        assert all(r.curve_prediction is None for r in rows)


def test_the_target_scheduler_waits_for_its_grace_and_reads_a_falling_metric_downwards() -> None:
    from coatsearch.objectives import Direction
    from coatsearch.search.target import TargetStopper

    rising = TargetStopper(0.9, grace=3)
    assert not rising.judge(Course(0, (0.95, 0.96)), []).stop  # reached, but before its grace
    assert rising.judge(Course(0, (0.5, 0.6, 0.9)), []).stop and not rising.judge(Course(0, (0.5, 0.6, 0.89)), []).stop
    falling = TargetStopper(0.1, grace=1, direction=Direction.MIN)  # a loss: stop once at or below
    assert falling.judge(Course(0, (0.3, 0.1)), []).stop and not falling.judge(Course(0, (0.3, 0.11)), []).stop


def test_the_target_scheduler_stops_each_trial_where_it_first_fits(table: Path, tmp_path: Path) -> None:
    target = 0.7
    rows = replay(table, tmp_path / "target", early_stopping={"kind": "target", "metric": "train_eval_acc", "target": target})
    trained = [r for r in rows if r.history]
    assert {r.status for r in trained} == {Status.STOPPED, Status.COMPLETE}
    for row in trained:
        curve = [epoch.train_eval_acc for epoch in row.history]
        assert row.fidelity == len(curve) and all(value < target for value in curve[:-1])
        if row.status == Status.STOPPED:
            assert curve[-1] >= target and row.fidelity < row.max_fidelity
        else:
            assert row.fidelity == row.max_fidelity


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize("change, expect", [
    ({"early_stopping": {"kind": "asha", "grace_period": 4}},
     "early_stopping.grace_period: 4 leaves no epoch to stop at before train.epochs 4"),
    ({"early_stopping": {"kind": "curve", "grace_period": 5}}, "early_stopping.grace_period: 5 leaves no epoch"),
    ({"early_stopping": {"kind": "hyperband", "brackets": 4}},
     "early_stopping.brackets: 4, but 4 epochs from grace_period 1 at reduction_factor 2 allow 3"),
    ({"early_stopping": {"kind": "moasha"}, "objectives": ["val_acc"]},
     "early_stopping.kind: moasha ranks several objectives, this space has one (val_acc)"),
    ({"early_stopping": {"kind": "curve"}, "objectives": ["val_acc", "latency_ms"]},
     "early_stopping.kind: curve compares objectives while trials train, and latency_ms"),
    ({"early_stopping": {"kind": "target", "metric": "train_eval_acc"}},
     "early_stopping.target: the target scheduler stops a trial once its train_eval_acc reaches a value"),
    ({"early_stopping": {"kind": "target", "metric": "train_eval_acc", "target": 98}},
     "early_stopping.target: train_eval_acc is a fraction, expected a value in (0, 1], got 98"),
    ({"early_stopping": {"kind": "asha", "target": 0.9}}, "early_stopping.target: only kind target reads it"),
    ({"early_stopping": {"kind": "target", "target": 0.9, "grace_period": 4}},
     "early_stopping.grace_period: 4 leaves no epoch to stop at before train.epochs 4"),
])
def test_a_scheduler_the_space_cannot_run_is_refused(change: dict, expect: str) -> None:
    space = {**TABLE_SPACE, **change}
    with pytest.raises(SpaceError) as error:
        compile_space(space_from_dict(space), check_data=False)
    assert str(error.value).startswith(expect) and "\n" not in str(error.value)


def test_a_reduction_factor_below_two_is_one_line_before_any_trial(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPACE, "early_stopping": {"kind": "hyperband", "reduction_factor": 1}}))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "early_stopping.reduction_factor" in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_rung_ladders_are_geometric() -> None:
    assert Asha(1, 3, 27).rungs == [1, 3, 9] and math.isclose(Hyperband(1, 3, 27).count, 4)


@pytest.mark.parametrize("early, brackets", [({"kind": "asha"}, 1), ({"kind": "hyperband"}, 3),
                                             ({"kind": "hyperband", "brackets": 2}, 2)])
def test_ray_runs_hyperband_as_tunes_asynchronous_brackets(early: dict, brackets: int) -> None:
    from coatsearch.search.ray_backend import tune_scheduler

    plan = compile_space(space_from_dict({**TABLE_SPACE, "backend": "ray", "early_stopping": early}), check_data=False)
    scheduler = tune_scheduler(plan)
    assert len(scheduler._brackets) == brackets and scheduler._max_t == 4


# ----------------------------------------------------------------------------- dry run
def test_the_expected_share_of_training_follows_the_ladder() -> None:
    from coatsearch.search.stopping import expected_fraction
    from coatsearch.space import EarlyStopping

    asha = expected_fraction(EarlyStopping(kind="asha"), 8)
    band = expected_fraction(EarlyStopping(kind="hyperband"), 8)
    assert asha is not None and asha[0] == pytest.approx(2.5 / 8)  # 1 + 1/2 + 2/4 + 4/8 epochs of 8
    # brackets of 8, 6, 4 and 4 shares train 31%, 50%, 75% and 100%
    assert band is not None and band[0] == pytest.approx((8 * 2.5 / 8 + 6 * 0.5 + 4 * 0.75 + 4) / 22)
    assert expected_fraction(EarlyStopping(kind="none"), 8) is None
    fits = expected_fraction(EarlyStopping(kind="target", metric="train_eval_acc", target=0.98, grace_period=2), 8)
    assert fits is not None and fits[0] == 1.0 and "between 25% and all" in fits[1]


def test_a_dry_run_estimates_the_run_under_its_scheduler(tmp_path: Path) -> None:
    import json

    space = dict(TINY_SPACE, early_stopping={"kind": "hyperband"}, train={**TINY_SPACE["train"], "epochs": 4})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert 0 < out["estimated_scheduled_run_s"] < out["estimated_run_s"]
    assert "hyperband's 3 brackets" in out["scheduled_basis"]


# ----------------------------------------------------------------------------- the report's view
def test_the_schedule_figure_shows_hypervolume_against_compute_and_stops() -> None:
    import pandas as pd

    from coatsearch.report.schedule import hypervolume_curve, schedule_figure

    table = pd.DataFrame({
        "trial": [0, 1, 2, 3, 4], "status": ["complete", "stopped", "complete", "infeasible", "complete"],
        "fidelity": [4, 1, 4, 0, 4], "max_fidelity": [4, 4, 4, 4, 4],
        "val_acc": [0.7, 0.5, 0.8, None, 0.6], "flops": [2e6, 3e6, 3e6, None, 1e6],
        "wall_time": [10.0, 2.0, 10.0, 0.0, 5.0], "clock_end": [None] * 5,
    })
    curve = hypervolume_curve(table)
    assert list(curve["trial"]) == [0, 1, 2, 4]  # the infeasible one trained nothing and is left out
    assert list(curve["compute"]) == [10.0, 12.0, 22.0, 27.0]
    assert curve["hypervolume"].is_monotonic_increasing and curve["hypervolume"].iloc[-1] == 1.0
    assert curve["hypervolume"].iloc[1] == curve["hypervolume"].iloc[0]  # a stopped trial adds nothing
    figure = schedule_figure(table)
    assert figure is not None and {t.name for t in figure.data} == {"hypervolume", "complete", "stopped"}
    assert schedule_figure(table.iloc[3:4]) is None


def test_on_ray_our_schedulers_stop_trials_through_a_tune_scheduler() -> None:
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from coatsearch.search.ray_backend import LedgerCallback, tune_scheduler
    from coatsearch.search.ray_schedulers import CourseTrialScheduler

    space = {**TABLE_SPACE, "backend": "ray", "early_stopping": {"kind": "curve", "grace_period": 2}}
    plan = compile_space(space_from_dict(space), check_data=False)
    callback = LedgerCallback(plan, Path("."), 0)
    scheduler = tune_scheduler(plan, callback)
    assert isinstance(scheduler, CourseTrialScheduler)

    def trial(k: int) -> SimpleNamespace:
        return SimpleNamespace(trial_id=f"t{k}", experiment_tag=f"{k + 1}_x")

    shape = [0.5, 0.7, 0.8, 0.85]
    for k in range(3):  # three trials run to the end
        for epoch, value in enumerate(shape, 1):
            result = {"val_acc": value + 0.01 * k, "flops": 1e6, "epoch": epoch, "row": ""}
            assert scheduler.on_trial_result(None, trial(k), result) == TrialScheduler.CONTINUE
        scheduler.on_trial_remove(None, trial(k))
    assert scheduler.on_trial_result(None, trial(3), {"val_acc": 0.3, "flops": 1e6, "epoch": 1, "row": ""}) \
        == TrialScheduler.CONTINUE  # before grace_period
    assert scheduler.on_trial_result(None, trial(3), {"val_acc": 0.5, "flops": 1e6, "epoch": 2, "row": ""}) \
        == TrialScheduler.STOP  # the same shape 0.2 lower: it ends near 0.77, below the best's 0.87
    assert callback.verdicts["t3"].epoch == 2 and callback.verdicts["t3"].prediction < 0.82


def _train_under(backend: str, kind: str, out: Path) -> None:
    """A real tiny search on ``backend`` under the scheduler ``kind``: the rows come back whole."""
    from coatsearch.runner import run_study
    from coatsearch.search.jsonl_ledger import read_ledger

    space = {**TINY_SPACE, "backend": backend, "objectives": ["val_acc", "flops"],
             "early_stopping": {"kind": kind, "grace_period": 1}}
    outcome = run_study(compile_space(space_from_dict(space)), out)
    table = outcome.table
    assert len(table) == 2 and set(table["status"]) <= {"complete", "stopped"}, table[["status", "reason"]]
    if backend == "ray":
        assert len(read_ledger(out)) == 2


@pytest.mark.slow
def test_optuna_trains_under_the_curve_stopper(tmp_path: Path) -> None:
    _train_under("optuna", "curve", tmp_path / "optuna-curve")


@pytest.mark.parametrize("kind", ["moasha", "curve"])
def test_our_schedulers_decide_alike_after_the_pickling_tune_does(kind: str) -> None:
    """Tune pickles the scheduler with the experiment (cloudpickle) before it feeds it: the
    copy stops the same trials at the same epochs as the scheduler built here, and stops
    one (a trial far below the others)."""
    from types import SimpleNamespace

    import cloudpickle
    from ray.tune.schedulers import TrialScheduler

    from coatsearch.search.ray_backend import tune_scheduler

    space = {**TABLE_SPACE, "backend": "ray", "early_stopping": {"kind": kind, "grace_period": 1}}
    built = tune_scheduler(compile_space(space_from_dict(space), check_data=False))
    copy = cloudpickle.loads(cloudpickle.dumps(built))
    decisions = {}
    for name, scheduler in (("built", built), ("copy", copy)):
        said = []
        for k, low in enumerate([0.0, 0.01, 0.02, -0.3]):  # three trials near each other, then one far below
            trial = SimpleNamespace(trial_id=f"t{k}", experiment_tag=f"{k + 1}_x")
            for epoch, value in enumerate([0.5, 0.7, 0.8, 0.85], 1):
                verdict = scheduler.on_trial_result(None, trial, {"val_acc": value + low, "flops": 1e6,
                                                                  "epoch": epoch, "row": ""})
                said.append((k, epoch, verdict))
                if verdict == TrialScheduler.STOP:
                    break
            scheduler.on_trial_remove(None, trial)
        decisions[name] = said
    assert decisions["copy"] == decisions["built"]
    assert [k for k, _, verdict in decisions["built"] if verdict == TrialScheduler.STOP] == [3]


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.usefixtures("no_leaked_ray")
def test_ray_trains_under_our_schedulers(tmp_path: Path) -> None:
    """Tune takes our scheduler (pickled with the experiment, fed every epoch): one real
    run, under the curve stopper; that MO-ASHA decides alike after the pickling is the test
    above (both kinds run through the same `CourseTrialScheduler`)."""
    _train_under("ray", "curve", tmp_path / "ray-curve")


def test_a_node_id_that_looks_like_a_number_reads_back_as_text(tmp_path: Path) -> None:
    """A stopped ray trial's table was refused when its node id read as a float (4e8... -> inf)."""
    from coatsearch.results import read_table, write_table
    from coatsearch.search.rows import TrialRow

    rows = [TrialRow(0, Status.COMPLETE, node="4e8123456789", channels="16"), TrialRow(1, Status.STOPPED)]
    written = write_table(rows, tmp_path / "results.csv")
    assert written["node"].tolist()[0] == "4e8123456789"
    assert read_table(tmp_path / "results.csv")["channels"].tolist()[0] == "16"
