"""The analysis layer: one comparisons pipeline for every output, and no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from coatsearch import perimage
from coatsearch.analysis import Design, analyse
from coatsearch.analysis.comparisons import ALPHA, comparisons
from coatsearch.analysis.stats import detectable, holm, welch


def _grid(levels=(("A", 0.9), ("B", 0.8), ("C", 0.8)), sizes=(100, 200), seeds=3) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        for layout, level in levels:
            for seed in range(seeds):
                rows.append({"trial": len(rows), "status": "complete", "fidelity": 1, "max_fidelity": 1,
                             "param.layout": layout, "param.size": size, "param.seed": seed,
                             "val_acc": level + rng.normal(0, 0.002), "val_images": 1000, "flops": 1, "params": 1})
    return pd.DataFrame(rows)


def test_a_grid_compares_within_strata_every_pair_of_a_category_and_neighbours_of_a_number():
    table = _grid()
    design = Design.of(table, {"layout": {"choices": ["A", "B", "C"]}, "size": {"choices": [100, 200]},
                               "seed": {"choices": [0, 1, 2]}}, "grid")
    assert design.factors == ("param.layout", "param.size") and design.crossed
    found = comparisons(table, design)
    assert list(zip(found["factor"], found["within"], found["first"], found["second"])) == [
        ("layout", "size 100", "A", "B"), ("layout", "size 100", "A", "C"), ("layout", "size 100", "B", "C"),
        ("layout", "size 200", "A", "B"), ("layout", "size 200", "A", "C"), ("layout", "size 200", "B", "C"),
        ("size", "layout A", "100", "200"), ("size", "layout B", "100", "200"), ("size", "layout C", "100", "200")]
    by_layout = found[found["factor"] == "layout"]
    assert (by_layout.loc[by_layout["first"] == "A", "verdict"].str.startswith("A > ")).all()
    assert by_layout.loc[by_layout["first"] == "B", "verdict"].str.startswith("not resolved (detectable: ").all()
    assert found.loc[found["factor"] == "size", "verdict"].str.startswith("not resolved").all()
    # no per-image records here: the unpaired test with each configuration's binomial bound
    assert (found["test"] == "Welch, seeds + binomial bound").all() and (found["kind"] == "pair").all()
    assert (found[["n_first", "n_second"]] == 3).all().all()
    # Holm: never below the raw p, and each factor's validation accuracy is a family of its own
    assert (found["p_holm"] >= found["p"]).all()
    assert set(found["family"]) == {"layout: val_acc", "size: val_acc"} and set(found["role"]) == {"primary"}
    for _, family in found.groupby("family"):
        assert family["p_holm"].tolist() == pytest.approx(holm(family["p"].tolist()))
        assert (family["ci_simultaneous_high"] - family["ci_simultaneous_low"]
                > family["ci95_high"] - family["ci95_low"]).all()
    # the binomial part widens the interval beyond the seeds' spread alone
    a = table[(table["param.layout"] == "A") & (table["param.size"] == 100)]["val_acc"]
    b = table[(table["param.layout"] == "B") & (table["param.size"] == 100)]["val_acc"]
    row = found.iloc[0]
    assert row["ci95_high"] - row["ci95_low"] > np.subtract(*welch(a, b).ci95[::-1])


def _records(levels: dict[str, tuple[float, int]], images: int = 1000, seed_flips: float = 0.02) -> pd.DataFrame:
    """Trials with per-image correctness: every configuration gets right the same easy
    images and differs in ``extra`` more; each seed flips a few at random."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, images)
    easy = rng.random(images) < 0.8
    rows = []
    for layout, (seeds, extra) in levels.items():
        base = easy.copy()
        base[np.flatnonzero(~easy)[:extra]] = True
        for seed in range(seeds):
            bits = np.where(rng.random(images) < seed_flips, ~base, base)
            rows.append({"trial": len(rows), "status": "complete", "fidelity": 1, "max_fidelity": 1,
                         "param.layout": layout, "param.seed": seed, "val_acc": bits.mean(), "val_images": images,
                         "val_correct": perimage.encode(bits, labels), "flops": 1, "params": 1})
    return pd.DataFrame(rows)


def test_configurations_with_per_image_records_are_compared_image_by_image():
    table = _records({"A": (3, 30), "B": (3, 0)})  # A also gets 30 more of the hard images right
    design = Design.of(table, {"layout": {"choices": ["A", "B"]}}, "grid")
    (row,) = comparisons(table, design).itertuples()
    assert row.test == "paired by image, seeds + images" and row.verdict == "A > B"
    unpaired = comparisons(table.drop(columns="val_correct"), design).iloc[0]
    assert unpaired["test"] == "Welch, seeds + binomial bound"
    assert unpaired["difference"] == pytest.approx(row.difference)
    # the images both get right (or wrong) carry no variance once paired
    assert row.se < 0.6 * unpaired["se"] and row.detectable < unpaired["detectable"]
    # one trial each: McNemar's exact test of the two networks; without records, no test at all
    single = table[table["param.seed"] == 0]
    (one,) = comparisons(single, design).itertuples()
    assert one.test == "McNemar exact, one trial each" and one.df == np.inf
    assert comparisons(single.drop(columns="val_correct"), design).empty
    # records on another set of images are never paired with these
    other = table.copy()
    other.loc[other["param.layout"] == "B", "val_correct"] = [
        perimage.encode(perimage.decode(c).bits, np.zeros(1000)) for c in other.loc[other["param.layout"] == "B", "val_correct"]]
    assert comparisons(other, design).iloc[0]["test"] == "Welch, seeds + binomial bound"


def test_an_unresolved_verdict_states_the_difference_it_would_have_resolved():
    table = _grid()
    design = Design.of(table, {}, "grid")
    found = comparisons(table, design)
    sizes = found.groupby("family")["family"].transform("size")  # the strictest Holm step of each family
    expected = [detectable(se, df, ALPHA / m) for se, df, m in zip(found["se"], found["df"], sizes)]
    assert found["detectable"].tolist() == pytest.approx(expected)
    quiet = found[found["p_holm"] >= ALPHA]
    assert len(quiet) and all(v == f"not resolved (detectable: {d * 100:.1f} pp)"
                              for v, d in zip(quiet["verdict"], quiet["detectable"]))
    # a difference of that size is far above the one measured between equal configurations
    assert (quiet["detectable"] > quiet["difference"].abs()).all()


def test_an_ordered_factor_gets_a_trend_over_all_its_values():
    rows = []
    for split in (1, 2, 3, 4, 5):  # +0.5 pp per step, seeds 0.4 pp apart: too little for any pair
        for seed, offset in enumerate((-0.004, 0.0, 0.004)):
            rows.append({"trial": len(rows), "status": "complete", "fidelity": 1, "max_fidelity": 1,
                         "param.split": split, "param.seed": seed, "val_acc": 0.80 + 0.005 * split + offset,
                         "val_images": 100_000, "flops": 1, "params": 1})
    table = pd.DataFrame(rows)
    found = comparisons(table, Design.of(table, {"split": {"choices": [1, 2, 3, 4, 5]}}, "grid"))
    pairs, (trend_row,) = found[found["kind"] == "pair"], found[found["kind"] == "trend"].itertuples()
    assert list(zip(pairs["first"], pairs["second"])) == [("1", "2"), ("2", "3"), ("3", "4"), ("4", "5")]
    assert (pairs["p_holm"] >= ALPHA).all()
    assert (trend_row.first, trend_row.second, trend_row.trials) == ("1", "5", 15)
    assert trend_row.difference == pytest.approx(0.005) and trend_row.verdict == "rises from 1 to 5"
    assert trend_row.test == "trend, least squares + binomial bound" and trend_row.df > 10


def test_a_sweet_spot_shows_as_a_curvature_the_trend_misses():
    """Accuracy peaking at the middle split: no trend over the order, but its quadratic
    term (half the second difference of the means, for equal steps and counts) is found."""
    rows = []
    for split, level in ((1, 0.80), (2, 0.84), (3, 0.80)):
        for seed, offset in enumerate((-0.003, 0.0, 0.003)):
            rows.append({"trial": len(rows), "status": "complete", "fidelity": 1, "max_fidelity": 1,
                         "param.split": split, "param.seed": seed, "val_acc": level + offset,
                         "val_images": 100_000, "flops": 1, "params": 1})
    table = pd.DataFrame(rows)
    found = comparisons(table, Design.of(table, {"split": {"choices": [1, 2, 3]}}, "grid"))
    (trend_row,), (bend,) = found[found["kind"] == "trend"].itertuples(), found[found["kind"] == "curvature"].itertuples()
    assert trend_row.difference == pytest.approx(0.0, abs=1e-12) and trend_row.verdict.startswith("not resolved")
    assert bend.difference == pytest.approx((0.80 - 2 * 0.84 + 0.80) / 2)
    assert bend.verdict == "curves down from 1 to 3" and bend.test == "curvature, least squares + binomial bound"


def test_values_that_build_the_same_networks_are_not_compared():
    """Two scaling rules that build the same network at x1 are the same configuration;
    at x2 they differ and are compared."""
    rows = []
    for rule in ("width", "depth"):
        for scale in (1, 2):
            for seed in range(3):
                spec = "base" if scale == 1 else f"{rule}-x2"
                rows.append({"trial": len(rows), "status": "complete", "fidelity": 1, "max_fidelity": 1,
                             "param.rule": rule, "param.scale": scale, "param.seed": seed, "spec": spec,
                             "val_acc": 0.8 + 0.01 * seed, "val_images": 1000, "flops": 1, "params": 1})
    table = pd.DataFrame(rows)
    found = comparisons(table, Design.of(table, {"rule": {"choices": ["width", "depth"]},
                                                 "scale": {"choices": [1, 2]}}, "grid"))
    rules = found[found["factor"] == "rule"]
    assert rules["within"].tolist() == ["scale 2"]


def test_a_comparison_too_small_to_say_anything_prints_no_interval():
    """Two seeds a side on 50 images, far apart: the 95% interval would run past +-100 pp."""
    rows = [{"trial": i, "status": "complete", "fidelity": 1, "max_fidelity": 1, "param.layout": layout,
             "param.seed": i % 2, "val_acc": acc, "val_images": 50, "flops": 1, "params": 1}
            for i, (layout, acc) in enumerate((("A", 0.2), ("A", 0.9), ("B", 0.3), ("B", 0.95)))]
    table = pd.DataFrame(rows)
    (row,) = comparisons(table, Design.of(table, {"layout": {"choices": ["A", "B"]}}, "grid")).itertuples()
    assert np.isnan(row.ci95_low) and np.isnan(row.ci_simultaneous_high)
    assert row.verdict.startswith("too few trials to say")


def test_a_sampled_search_compares_over_all_trials_in_the_spaces_order():
    table = _grid()
    design = Design.of(table, {"layout": {"choices": ["C", "B", "A"]}}, "tpe")
    assert not design.crossed and design.factors == ("param.layout", "param.size")
    found = comparisons(table, design)
    layout = found[found["factor"] == "layout"]
    assert list(zip(layout["within"], layout["first"], layout["second"])) == [
        ("all trials", "C", "B"), ("all trials", "C", "A"), ("all trials", "B", "A")]
    assert (layout["n_first"] == 6).all()


def test_a_numeric_choice_read_back_from_csv_keeps_the_spaces_order():
    table = _grid(sizes=(200, 100))
    table["param.size"] = table["param.size"].astype(float)  # a CSV's 100.0 is the YAML's 100
    design = Design.of(table, {"size": {"choices": [200, 100]}}, "grid")
    assert design.order(table, "param.size") == [200.0, 100.0]


def test_the_analysis_is_one_object_for_every_view():
    table = _grid()
    found = analyse(table, Design.of(table, {}, "grid"))
    assert [e.parameter for e in found.effects] == ["layout", "size"]
    assert found.effect_of("param.layout").best().value == "A"
    assert set(found.summary["param.layout"]) == {"A", "B", "C"} and (found.summary["n"] == 3).all()
    assert found.scaling is None  # no scale parameter


@pytest.mark.parametrize("command", [
    "import coatsearch.results, coatsearch.analysis, coatsearch.report",
    "from coatsearch.cli import app; app(['report', RUN, '--format', 'markdown'], standalone_mode=False)",
    "from coatsearch.cli import app; app(['report', RUN], standalone_mode=False)",
    "from coatsearch.cli import app; app(['best', RUN], standalone_mode=False)",
])
def test_reading_results_loads_no_torch(command, tmp_path):
    table = _grid()
    table["spec"] = '{"stages": []}'
    table.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "space.yaml").write_text("study: s\nsampler: grid\nparams:\n  layout: {choices: [A, B, C]}\n")
    code = textwrap.dedent(f"""
        import sys
        RUN = {str(tmp_path)!r}
        try:
            {command}
        except SystemExit:
            pass
        except Exception as exc:  # best may refuse the toy spec; what was imported is the point
            print(type(exc).__name__, exc)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH" if loaded else "NO TORCH")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "NO TORCH", result.stdout + result.stderr


def test_a_continuous_factor_is_compared_by_quantile_bins_not_one_row_per_value():
    rng = np.random.default_rng(1)
    lrs = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), 40))
    table = pd.DataFrame([{"trial": i, "status": "complete", "fidelity": 1, "max_fidelity": 1, "param.train.lr": lr,
                           "param.layout": "AB"[i % 2], "val_acc": 0.7 + 0.05 * np.log10(lr / 1e-4) + rng.normal(0, 0.005),
                           "val_images": 1000, "flops": 1, "params": 1} for i, lr in enumerate(lrs)])
    design = Design.of(table, {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "tpe")
    found = analyse(table, design)
    lr = found.effect_of("param.train.lr")
    assert len(lr.levels) == 5 and sum(level.n for level in lr.levels) == 40  # not 40 rows of one trial
    assert all(7 <= level.n <= 9 for level in lr.levels)
    low, high = (float(x) for x in lr.levels[0].value.split("–"))
    assert low == pytest.approx(lrs.min(), rel=1e-2) and high < float(lr.levels[-1].value.split("–")[0]) * 1.01
    assert [lv.mean for lv in lr.levels] == sorted(lv.mean for lv in lr.levels)  # the bins keep their order
    rows = found.comparisons[found.comparisons["factor"] == "train.lr"]
    assert set(rows["kind"]) >= {"pair", "trend"} and (rows["kind"] == "pair").sum() == 4  # neighbouring bins
    assert len(found.effect_of("param.layout").levels) == 2  # a two-value factor stays value by value
    assert len(found.summary) == 40  # configurations are still the trials' own values


def test_a_trial_without_an_ordered_factors_value_is_left_out_of_its_trend():
    """A parameter added to a space after some trials ran: those trials have no place on
    its order, so the trend and curvature over its values leave them out."""
    table = _grid(levels=(("A", 0.8),), sizes=(1, 2, 3))
    table = pd.concat([table, table.iloc[[0]].assign(trial=99, **{"param.size": np.nan})], ignore_index=True)
    design = Design.of(table, {"size": {"choices": [1, 2, 3]}}, "grid")
    found = comparisons(table, design)
    trend = found[found["test"].str.startswith("trend")].iloc[0]
    assert (trend["first"], trend["second"], trend["n_first"], trend["n_second"]) == ("1", "3", 3, 3)
