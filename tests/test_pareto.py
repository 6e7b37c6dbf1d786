"""Pareto maths: the non-dominated sort and the 2-D hypervolume, on hand-made points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coatsearch.analysis.fronts import front_hypervolume, hypervolume_2d, non_dominated, pareto_front


# ------------------------------------------------------------------ non-dominated sort
def test_minimise_both():
    points = [(1, 5), (2, 3), (3, 4), (4, 1), (5, 5)]
    assert non_dominated(points, [False, False]).tolist() == [True, True, False, True, False]


def test_maximise_accuracy_minimise_flops():
    # (acc, flops): same accuracy for more FLOPs is dominated; so is less accuracy for more FLOPs
    points = [(0.90, 10), (0.80, 5), (0.85, 12), (0.90, 11), (0.95, 30)]
    assert non_dominated(points, [True, False]).tolist() == [True, True, False, False, True]


def test_direction_decides_the_front():
    points = [(1, 1), (2, 2), (1, 2)]
    assert non_dominated(points, [False, False]).tolist() == [True, False, False]
    assert non_dominated(points, [True, True]).tolist() == [False, True, False]
    assert non_dominated(points, [False, True]).tolist() == [False, False, True]


def test_ties_stay_on_the_front_and_tied_dominated_points_stay_off():
    points = [(1, 3), (1, 3), (2, 2), (3, 3), (3, 3)]
    assert non_dominated(points, [False, False]).tolist() == [True, True, True, False, False]


def test_one_point_and_all_equal_points_are_the_front():
    assert non_dominated([(0.5, 7.0)], [True, False]).tolist() == [True]
    assert non_dominated([(2.0, 2.0)] * 4, [True, False]).tolist() == [True] * 4


def test_three_objectives_and_shape_errors():
    points = [(1, 1, 9), (1, 1, 8), (0, 5, 9)]
    assert non_dominated(points, [False, False, False]).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="objectives"):
        non_dominated([(1, 2)], [False, False, False])



def test_pareto_front_ranks_only_complete_full_fidelity_trials():
    import pandas as pd

    table = pd.DataFrame({
        "trial": [0, 1, 2, 3],
        "status": ["complete", "stopped", "complete", "failed"],
        "fidelity": [3, 1, 3, 0],
        "max_fidelity": [3, 3, 3, 3],
        "val_acc": [0.80, 0.99, 0.70, None],
        "flops": [10.0, 1.0, 5.0, None],
    })
    front = pareto_front(table, [("val_acc", "max"), ("flops", "min")])
    assert front["trial"].tolist() == [0, 2]  # the stopped trial's cheap high score does not count


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None)
def test_front_is_mutually_non_dominated_and_dominates_the_rest(points):
    costs = np.array(points, dtype=float)
    mask = non_dominated(costs, [False, False])

    def dominates(a, b):
        return bool(np.all(a <= b) and np.any(a < b))

    front = costs[mask]
    assert not any(dominates(a, b) for a in front for b in front)
    assert all(any(dominates(a, b) for a in front) for b in costs[~mask])


# ------------------------------------------------------------------ hypervolume
def test_hypervolume_of_one_point():
    assert hypervolume_2d([(1, 2)], [False, False], (3, 3)) == pytest.approx(2.0)


def test_hypervolume_of_two_points_counts_their_overlap_once():
    # boxes [1,3]x[2,3] (area 2) and [2,3]x[1,3] (area 2) overlap in [2,3]x[2,3] (area 1)
    assert hypervolume_2d([(1, 2), (2, 1)], [False, False], (3, 3)) == pytest.approx(3.0)


def test_dominated_repeated_and_outside_points_add_nothing():
    base = hypervolume_2d([(1, 2), (2, 1)], [False, False], (3, 3))
    more = [(1, 2), (2, 1), (2, 2.5), (1, 2), (4, 0), (0, 4), (3, 0.5)]
    assert hypervolume_2d(more, [False, False], (3, 3)) == pytest.approx(base)


def test_ties_in_the_first_objective():
    assert hypervolume_2d([(1, 3), (1, 2)], [False, False], (3, 3)) == pytest.approx(2.0)


def test_hypervolume_accuracy_up_flops_down():
    # (acc, flops) with reference (acc 0, flops 30): 20*0.8 + 10*0.9 - 10*0.8 = 17
    points = [(0.8, 10), (0.9, 20)]
    assert hypervolume_2d(points, [True, False], (0.0, 30)) == pytest.approx(17.0)


def test_hypervolume_maximise_both():
    # boxes [0,3]x[0,1] and [0,1]x[0,3] overlap in [0,1]x[0,1]: 3 + 3 - 1
    assert hypervolume_2d([(3, 1), (1, 3)], [True, True], (0, 0)) == pytest.approx(5.0)


def test_hypervolume_of_nothing_is_zero():
    assert hypervolume_2d(np.empty((0, 2)), [False, False], (1, 1)) == 0.0
    assert hypervolume_2d([(5, 5)], [False, False], (1, 1)) == 0.0
    assert hypervolume_2d([(float("nan"), 0.5)], [False, False], (1, 1)) == 0.0
    with pytest.raises(ValueError):
        hypervolume_2d([(1, 2, 3)], [False, False, False], (4, 4, 4))


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_hypervolume_equals_the_count_of_dominated_unit_cells(points):
    # On integer points with reference (10, 10), the dominated region is a union of unit cells.
    costs = np.array(points)
    cells = sum(
        1 for i in range(10) for j in range(10) if np.any((costs[:, 0] <= i) & (costs[:, 1] <= j))
    )
    assert hypervolume_2d(costs, [False, False], (10, 10)) == pytest.approx(cells)
    front = costs[non_dominated(costs, [False, False])]
    assert hypervolume_2d(front, [False, False], (10, 10)) == pytest.approx(cells)


def test_report_hypervolume_is_normalised_by_its_stated_reference():
    import pandas as pd

    ranked = pd.DataFrame({"val_acc": [0.8, 0.9], "flops": [10e6, 20e6]})
    volume = front_hypervolume(ranked, "flops")
    # reference cost 1.1 * 20M = 22M; area 12M*0.8 + 2M*0.9 - ... = (22-10)*0.8 + (22-20)*(0.9-0.8)
    assert volume.reference_cost == pytest.approx(22e6)
    assert volume.value == pytest.approx((12e6 * 0.8 + 2e6 * 0.1) / 22e6)
    assert "22.00M" in volume.describe() and "1.1 × the largest" in volume.describe()


def test_the_analysis_carries_each_costs_front_for_the_report_to_draw():
    import pandas as pd

    from coatsearch.analysis import Design, analyse

    table = pd.DataFrame({
        "trial": [0, 1, 2, 3], "status": ["complete"] * 3 + ["failed"], "fidelity": [2, 2, 2, 0],
        "max_fidelity": [2] * 4, "val_acc": [0.8, 0.9, 0.85, None], "flops": [10e6, 20e6, 30e6, 5e6],
        "params": [3e5, 1e5, 2e5, None], "param.x": [1, 2, 3, 4],
    })
    fronts = analyse(table, Design.of(table, {}, None)).cost_fronts
    assert set(fronts) == {"flops", "params"}  # no latency recorded: no front against it
    assert fronts["flops"].front["trial"].tolist() == [0, 1]  # trial 2 costs more for less; 3 failed
    assert fronts["params"].front["trial"].tolist() == [1]
    assert fronts["flops"].hypervolume == front_hypervolume(table.iloc[:3], "flops")
