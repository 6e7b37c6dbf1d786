"""Each study re-runs from its folder, and its README shows exactly its CSV's numbers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from coatsearch.analysis import Design
from coatsearch.analysis.summaries import summarise
from coatsearch.cli import app
from coatsearch.report import load_run
from coatsearch.results import read_table
from coatsearch.studies import (
    COMPARISONS_END,
    COMPARISONS_START,
    END,
    EQUAL_LOSS_END,
    EQUAL_LOSS_START,
    FITS_END,
    FITS_START,
    START,
    TRAIN_FIT_END,
    TRAIN_FIT_START,
    load_study,
    regenerate,
    replace_results,
    summary_markdown,
)

STUDIES = sorted(p.parent for p in (Path(__file__).resolve().parent.parent / "studies").glob("*/space.yaml"))


#: The one study whose smoke re-run evaluates its test set too (its first networks are the
#: smallest).
TEST_PASS_IN = "scaling"


def _smoke_overrides(study_dir: Path) -> list[str]:
    space = load_study(study_dir)
    # a small validation split, and the test pass in one study only: evaluating the study's
    # own (1,000 and 2,000 images) would be most of the test's time
    sets = ["train.epochs=1", "trials=2", "params.seed.choices=[0]", "data.train_size=300",
            "data.val_fraction=0.02"]
    if study_dir.name != TEST_PASS_IN:
        sets.append("train.eval_test=false")
    if "data.train_size" in space.params:
        sets.append("params.data.train_size.choices=[300]")
    if space.train.get("steps"):
        sets.append("train.steps=2")  # a study with a step budget: two steps in the one epoch
    return sets


#: The study whose smoke re-run is a command of its own, as a user types it; the others run
#: the same command in the test's process (the stack's imports and torch's first-step set-up,
#: about 6 s a run, paid once).
IN_ITS_OWN_PROCESS = "scaling_rules"


@pytest.mark.parametrize("study_dir", STUDIES, ids=[p.name for p in STUDIES])
@pytest.mark.slow
def test_study_reruns_in_a_smoke_configuration(study_dir, tmp_path):
    copy = tmp_path / study_dir.name
    copy.mkdir()
    shutil.copyfile(study_dir / "space.yaml", copy / "space.yaml")
    shutil.copyfile(study_dir / "README.md", copy / "README.md")
    argv = ["study", str(copy), "--out", str(tmp_path / "run")]
    for item in _smoke_overrides(study_dir):
        argv += ["--set", item]
    if study_dir.name == IN_ITS_OWN_PROCESS:
        result = subprocess.run([sys.executable, "-m", "coatsearch.cli", *argv], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        invoked = CliRunner().invoke(app, argv)
        assert invoked.exit_code == 0, (invoked.stderr[-2000:], invoked.exception)
    table = read_table(copy / "results.csv")
    assert (table["status"] == "complete").sum() == 2
    tested = "test_acc" in table and bool(table["test_acc"].notna().all())
    assert tested == (study_dir.name == TEST_PASS_IN)
    summary = pd.read_csv(copy / "summary.csv")
    assert summary["n"].sum() == 2
    readme = (copy / "README.md").read_text()
    analysis = load_run(copy).analysis
    assert summary_markdown(analysis.summary, list(analysis.design.factors) or ["configuration"]) in readme
    assert (copy / "report.html").exists()
    # the report and the study's tables are one analysis: the page's comparisons.csv is the study's
    pd.testing.assert_frame_equal(pd.read_csv(copy / "comparisons.csv"), pd.read_csv(tmp_path / "run" / "comparisons.csv"))


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start): text.index(end)].strip() if start in text else ""


@pytest.mark.parametrize("study_dir", STUDIES, ids=[p.name for p in STUDIES])
@pytest.mark.slow
def test_committed_outputs_are_what_the_committed_results_regenerate(study_dir, tmp_path):
    """The README's sections and the study's tables, rebuilt from ``results.csv`` and
    ``space.yaml`` alone, are the committed ones."""
    if not (study_dir / "results.csv").exists():
        pytest.skip(f"{study_dir.name}: no committed results yet")
    copy = tmp_path / study_dir.name
    copy.mkdir()
    for name in ("space.yaml", "README.md", "results.csv"):
        shutil.copyfile(study_dir / name, copy / name)
    regenerate(copy)
    tables = ["summary.csv", "comparisons.csv", "effects.csv"]
    tables += [name for name in ("equal_loss.csv", "train_fit.csv") if (study_dir / name).exists()]
    for name in tables:
        committed = pd.read_csv(study_dir / name, dtype={"first": str, "second": str, "value": str})
        rebuilt = pd.read_csv(copy / name, dtype={"first": str, "second": str, "value": str})
        pd.testing.assert_frame_equal(committed, rebuilt, check_dtype=False, check_exact=False, obj=name)
    committed, rebuilt = (study_dir / "README.md").read_text(), (copy / "README.md").read_text()
    for start, end in ((START, END), (COMPARISONS_START, COMPARISONS_END), (EQUAL_LOSS_START, EQUAL_LOSS_END),
                       (TRAIN_FIT_START, TRAIN_FIT_END)):
        _assert_same_text_and_numbers(_section(committed, start, end), _section(rebuilt, start, end))
    _assert_same_text_and_numbers(_section(committed, FITS_START, FITS_END), _section(rebuilt, FITS_START, FITS_END),
                                  tolerance=0.02)


def test_replace_results_needs_the_markers():
    assert replace_results(f"a\n{START}\nold\n{END}\nb", "new") == f"a\n{START}\nnew\n{END}\nb"
    from coatsearch.space import SpaceError

    with pytest.raises(SpaceError, match="markers"):
        replace_results("no markers here", "new")


def test_summary_is_mean_and_std_over_seeds_of_full_fidelity_trials():
    rows = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3], "status": ["complete", "complete", "complete", "stopped"],
            "fidelity": [3, 3, 3, 1], "max_fidelity": [3, 3, 3, 3], "param.layout": ["A", "A", "B", "B"],
            "val_acc": [0.8, 0.9, 0.5, 0.1], "flops": [10, 10, 20, 20], "params": [1, 1, 2, 2],
        }
    )
    summary = summarise(rows, Design(("param.layout",))).set_index("param.layout")
    assert summary.loc["A", "n"] == 2 and summary.loc["B", "n"] == 1
    assert summary.loc["A", "val_acc_mean"] == pytest.approx(0.85)
    assert summary.loc["A", "val_acc_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert summary.loc["B", "val_acc_mean"] == pytest.approx(0.5)  # the stopped trial is not ranked
    table = summary_markdown(summary.reset_index(), ["param.layout"])
    assert "| A | 2 |" in table and "85.00 ± 7.07" in table


def test_the_results_table_shows_each_configurations_shape_and_a_fitted_loss_in_powers_of_ten():
    """A budget's matching picks each configuration's blocks and widths, so the table shows
    them (and says where seeds built different ones); a loss below 0.01 keeps its digits."""
    rows = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3], "status": ["complete"] * 4, "fidelity": [3] * 4, "max_fidelity": [3] * 4,
            "param.layout": ["A", "A", "B", "B"], "val_acc": [0.8, 0.9, 0.5, 0.6], "flops": [10] * 4,
            "params": [1] * 4, "blocks": ["1,2,3,1", "1,2,3,1", "3", "4"], "channels": ["24,48,96,192"] * 2 + ["128"] * 2,
            "train_loss_running": [0.0002, 0.0003, 0.5, 0.6],
        }
    )
    table = summary_markdown(summarise(rows, Design(("param.layout",))), ["param.layout"])
    assert "| blocks | widths |" in table
    assert "| A | 2 | 10 | 1 | 1/2/3/1 | 24/48/96/192 |" in table and "| B | 2 | 10 | 1 | varies | 128 |" in table
    assert "2.50e-04 ± 7.07e-05" in table and "0.550 ± 0.071" in table


def test_summary_lists_configurations_in_the_spaces_order_whatever_order_trials_ran():
    rows = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3], "status": ["complete"] * 4, "fidelity": [3] * 4, "max_fidelity": [3] * 4,
            "param.layout": ["C-T-T-T", "C-C-C-T", None, "C-C-C-T"], "val_acc": [0.7, 0.8, 0.5, 0.9],
            "flops": [10] * 4, "params": [1] * 4,
        }
    )
    design = Design(("param.layout",), {"param.layout": ("C-C-C-T", "C-T-T-T")})
    summary = summarise(rows, design)
    assert summary["param.layout"].tolist()[:2] == ["C-C-C-T", "C-T-T-T"]
    assert summary["param.layout"].isna().tolist() == [False, False, True]  # a missing value last
    assert summary["n"].tolist() == [2, 1, 1]


def test_a_study_of_seeds_alone_summarises_one_configuration():
    rows = pd.DataFrame(
        {"trial": [0, 1], "status": ["complete"] * 2, "fidelity": [1, 1], "max_fidelity": [1, 1],
         "val_acc": [0.5, 0.7], "flops": [1, 1], "params": [1, 1]}
    )
    summary = summarise(rows, Design())
    assert len(summary) == 1 and summary.loc[0, "n"] == 2
    assert summary.loc[0, "val_acc_mean"] == pytest.approx(0.6)


def _assert_same_text_and_numbers(committed: str, recomputed: str, tolerance: float | None = None) -> None:
    """Equal words, equal whole numbers (counts, trials, steps), and each decimal within one
    unit of its last printed digit: a sum or a least-squares fit can move in its last bits
    between CPUs and BLAS builds, which moves a value on a rounding edge (+1.295) by one
    printed digit and is not a change of result. A ``tolerance`` replaces that bound for
    every number (the scaling fits, whose slopes move by more between scipy builds)."""
    import re

    number = re.compile(r"-?\d+(?:\.(\d+))?")
    assert number.sub("#", committed) == number.sub("#", recomputed)
    for old, new in zip(number.finditer(committed), number.finditer(recomputed)):
        bound = tolerance if tolerance is not None else (10.0 ** -len(old.group(1)) * 1.001 if old.group(1) else 0.0)
        assert abs(float(old.group()) - float(new.group())) <= bound, (old.group(), new.group())


def test_numbers_one_printed_digit_apart_are_the_same_result_and_two_are_not():
    _assert_same_text_and_numbers("rises +1.30/step [0.8, 1]", "rises +1.29/step [0.8, 1]")
    with pytest.raises(AssertionError):
        _assert_same_text_and_numbers("rises +1.31/step", "rises +1.29/step")
    with pytest.raises(AssertionError):
        _assert_same_text_and_numbers("rises +1.30/step", "falls +1.30/step")
    with pytest.raises(AssertionError):
        _assert_same_text_and_numbers("| 2 of 3 |", "| 3 of 3 |")


@pytest.mark.parametrize("study_dir", STUDIES, ids=[p.name for p in STUDIES])
def test_every_committed_study_measured_the_final_networks_fit(study_dir):
    """``train_eval_acc`` (eval mode, final weights) is what a gap is computed from; a study
    recorded before it existed would report the running, train-mode figure instead."""
    results = study_dir / "results.csv"
    if not results.exists():
        pytest.skip(f"{study_dir.name}: no committed results yet")
    table = read_table(results)
    complete = table[table["status"] == "complete"]
    assert len(complete) > 0
    assert "train_eval_acc" in table.columns
    assert complete["train_eval_acc"].notna().all()
    assert ((complete["gap"] - (complete["train_eval_acc"] - complete["val_acc"])).abs() < 1e-9).all()


def test_layouts_study_gives_attention_room_and_trains_every_layout_until_it_fits():
    """The regime the layout comparison needs: S3 on at least 8x8 tokens in every network
    (ViT-REL's single Transformer stage too), and every layout, each of 3 seeds, trained
    until it fits its training images (98% in eval mode), so the gap compares networks
    that have converged, as the paper's does."""
    import json

    from coatsearch.spec import NetSpec

    study_dir = next(d for d in STUDIES if d.name == "layouts")
    table = read_table(study_dir / "results.csv")
    complete = table[table["status"] == "complete"]
    for text in complete["spec"].unique():
        spec = NetSpec.from_dict(json.loads(text))
        sides = spec.resolutions()
        if spec.stem.kind == "conv":
            assert sides[2] >= 8, (spec.layout, sides)
        else:
            assert all(side >= 8 for stage, side in zip(spec.stages, sides) if stage.kind == "T"), (spec.layout, sides)
    seeds = complete.groupby("param.layout")["param.seed"].nunique()
    assert set(seeds.index) == {"C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "vit-rel"} and (seeds >= 3).all(), seeds
    assert (complete["train_eval_acc"] >= 0.98).all(), complete[["param.layout", "param.seed", "train_eval_acc"]]


def test_layouts_study_compares_image_by_image_at_shapes_near_the_bases_depth():
    """The layouts study was run with per-image records, so its accuracy comparisons are
    paired; and joint FLOPs+params matching kept every layout near the base's depth (no
    one-block ViT-REL, no C-T-T-T of 1/1/1/1)."""
    from coatsearch import perimage

    study_dir = next(d for d in STUDIES if d.name == "layouts")
    table = read_table(study_dir / "results.csv")
    complete = table[table["status"] == "complete"]
    for column, size in (("val_correct", "val_images"), ("test_correct", "test_images")):
        records = perimage.matrix(complete[column])
        assert records is not None and records.shape == (len(complete), int(complete[size].iloc[0]))
    compared = pd.read_csv(study_dir / "comparisons.csv")
    accuracy = compared[compared["metric"].isin(["val_acc", "test_acc"])]
    assert (accuracy["test"] == "paired by image, seeds + images").all()
    for layout, blocks in complete.groupby("param.layout")["blocks"].first().items():
        counts = [int(b) for b in blocks.split(",")]
        middle = counts[1:3] if len(counts) == 4 else counts
        assert sum(middle) >= 3, (layout, blocks)
