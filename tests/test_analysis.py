"""The analysis layer: one comparisons pipeline for every output, and no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from coatsearch.analysis import Design, analyse
from coatsearch.analysis.comparisons import comparisons
from coatsearch.analysis.stats import holm, welch


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
    assert (by_layout.loc[by_layout["first"] == "B", "verdict"] == "no detectable difference").all()
    assert (found.loc[found["factor"] == "size", "verdict"] == "no detectable difference").all()
    assert (found[["n_first", "n_second"]] == 3).all().all()
    # Holm: never below the raw p, and the family is the whole table
    assert (found["p_holm"] >= found["p"]).all()
    assert found["p_holm"].tolist() == pytest.approx(holm(found["p"].tolist()))
    # the binomial part widens the interval beyond the seeds' spread alone
    a = table[(table["param.layout"] == "A") & (table["param.size"] == 100)]["val_acc"]
    b = table[(table["param.layout"] == "B") & (table["param.size"] == 100)]["val_acc"]
    row = found.iloc[0]
    assert row["ci95_high"] - row["ci95_low"] > np.subtract(*welch(a, b).ci95[::-1])


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
