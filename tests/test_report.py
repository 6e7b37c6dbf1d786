"""The HTML report and the report command, on results tables with the real columns."""

from __future__ import annotations

import html.parser
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import layout_study_rows, synthetic_row
from typer.testing import CliRunner

from coatsearch.analysis.fronts import front_hypervolume
from coatsearch.cli import app
from coatsearch.report import ReportError, build_report, load_run
from coatsearch.report.data import parse_band
from coatsearch.results import ranked, read_table

FIGURE_IDS = ("fig-effect-layout", "fig-pareto-flops", "fig-pareto-params", "fig-curves", "fig-gap", "fig-by-trial",
              "fig-schedule", "fig-edf")


class _Refs(html.parser.HTMLParser):
    """Every address the page would load by itself: script/img/iframe src, link href."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        key = {"script": "src", "img": "src", "iframe": "src", "link": "href", "source": "src"}.get(tag)
        if key and attrs.get(key):
            self.refs.append(attrs[key])


def loaded_addresses(page: str) -> list[str]:
    parser = _Refs()
    parser.feed(page)
    return parser.refs


def section(page: str, name: str) -> str:
    return page.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def figure_payload(page: str, div_id: str) -> str:
    """The JSON handed to Plotly.newPlot for one figure."""
    start = page.index(f'Plotly.newPlot(                        "{div_id}"')
    return page[start:page.index("</script>", start)]


# ------------------------------------------------------------------ the full study
@pytest.fixture
def study(write_study):
    return write_study(layout_study_rows(per_layout=2))


def test_report_of_a_study_with_failures(study):
    path = build_report(study)
    assert path == study / "report.html"
    page = path.read_text()
    for div_id in FIGURE_IDS:
        assert f'id="{div_id}"' in page
    assert page.count("Plotly.newPlot(") == len(FIGURE_IDS)
    assert "fig-pareto-latency_ms" not in page  # no latency measured
    # plotly.js once, not per figure; nothing loaded from elsewhere
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert 3e6 < len(page) < 6e6
    assert loaded_addresses(page) == []
    assert "cdn.plot.ly" not in page.split("plotly.js v", 1)[0]
    # FLOPs are said to be multiply-adds in the header and on the axis
    assert "FLOPs are multiply-adds counted once" in page
    assert "FLOPs (multiply-adds, log scale)" in figure_payload(page, "fig-pareto-flops")
    # every failure with its reason
    failures = section(page, "failures")
    for reason in ("RuntimeError: out of memory", "training loss is nan at epoch 2",
                   "no width multiplier meets 32M FLOPs within 3%"):
        assert reason in failures
    assert failures.count("<tr>") == 1 + 3


def test_report_front_and_top_are_the_hand_computed_ones(write_study):
    # (val_acc, FLOPs): trial 2 is dominated by 1, trial 5 by 0; trial 4 dominates every
    # other but was stopped after one epoch, so it is on no front and in no ranking
    rng = np.random.default_rng(0)
    points = {0: (0.90, 40e6), 1: (0.85, 20e6), 2: (0.80, 30e6), 3: (0.92, 80e6), 4: (0.97, 10e6), 5: (0.88, 50e6)}
    rows = []
    for trial, (acc, flops) in points.items():
        stopped = trial == 4
        row = synthetic_row(trial, "C-C-T-T", rng, status="stopped" if stopped else "complete",
                            fidelity=1 if stopped else None, flops=flops)
        row["val_acc"] = acc
        rows.append(row)
    run_dir = write_study(rows)
    build_report(run_dir, top=2)
    assert pd.read_csv(run_dir / "pareto.csv")["trial"].tolist() == [3, 0, 1]
    assert pd.read_csv(run_dir / "top.csv")["trial"].tolist() == [3, 0]
    page = (run_dir / "report.html").read_text()
    volume = front_hypervolume(ranked(read_table(run_dir / "results.csv")), "flops")
    assert f"hypervolume {volume.value:.3f}" in page and 0 < volume.value < 1


def test_report_is_the_same_every_time(study, tmp_path):
    first = build_report(study, out=tmp_path / "a" / "report.html").read_text()
    second = build_report(study, out=tmp_path / "b" / "report.html").read_text()
    assert first == second
    # written elsewhere, the page comes alone: no table lands in a folder of the user's
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["report.html"]


def test_edf_band_and_legend(study):
    table = read_table(study / "results.csv")
    complete = ranked(table)
    low, high = complete["flops"].min(), complete["flops"].quantile(0.75)  # some trials out, groups of two in
    build_report(study, flop_band=(low, high))
    edf = figure_payload((study / "report.html").read_text(), "fig-edf")
    inside = complete[(complete["flops"] >= low) & (complete["flops"] <= high)]
    assert f"{len(inside)} of {len(complete)} complete trials" in edf
    group = inside[inside["layout"] == inside["layout"].iloc[0]]
    error = 1 - group["val_acc"]
    legend = f"{group['layout'].iloc[0]}: n={len(group)}, best {error.min():.2%}, mean {error.mean():.2%}"
    assert legend in edf


def test_latency_front_when_measured(write_study):
    rows = layout_study_rows(per_layout=1, troubles=False)
    for i, row in enumerate(rows):
        row["latency_ms"] = 2.0 + i
    page = build_report(write_study(rows, objectives=("val_acc", "latency_ms"))).read_text()
    assert 'id="fig-pareto-latency_ms"' in page
    assert "latency_ms (min)" in page


# ------------------------------------------------------------------ small and odd studies
def test_single_trial(write_study):
    rng = np.random.default_rng(1)
    run_dir = write_study([synthetic_row(0, "C-C-T-T", rng)])
    page = build_report(run_dir).read_text()
    for div_id in ("fig-pareto-flops", "fig-pareto-params", "fig-curves"):
        assert f'id="{div_id}"' in page
    # one trial: no parameter varies (no effect figure), no spread, no order of trials
    for div_id in ("fig-effect-layout", "fig-gap", "fig-edf", "fig-by-trial"):
        assert f'id="{div_id}"' not in page
    assert "Pareto front (1)" in page
    assert section(page, "tables").count('<td data-v="0">0</td>') == 2  # Pareto set and top trials
    assert '<p class="empty">none</p>' in section(page, "failures")


def test_one_objective(write_study):
    run_dir = write_study(layout_study_rows(per_layout=1), objectives=("val_acc",))
    page = build_report(run_dir).read_text()
    assert "Best by val_acc (max)" in page and "Pareto set" not in page  # one objective: no front
    front = pd.read_csv(run_dir / "pareto.csv")
    best = ranked(read_table(run_dir / "results.csv"))["val_acc"].max()
    assert front["val_acc"].tolist() == [best]
    assert 'id="fig-pareto-flops"' in page  # the accuracy/cost trade-off is still drawn


def test_only_failures(write_study):
    rows = [r for r in layout_study_rows(per_layout=0) if r["status"] != "stopped"]
    page = build_report(write_study(rows)).read_text()
    assert "0 complete at full fidelity are ranked" in page
    assert 'id="fig-curves"' in page  # the failed trials' epochs are still drawn
    assert 'id="fig-edf"' not in page and "no group has two complete trials at full fidelity in the FLOP band" in page


@pytest.mark.parametrize("content", ["", "trial,status\n"])
def test_no_trials_yet(write_study, content):
    run_dir = write_study([])
    (run_dir / "results.csv").write_text(content)
    page = build_report(run_dir).read_text()
    assert "0 trials" in page and "Plotly.newPlot(" not in page


def test_without_a_space_file(write_study):
    run_dir = write_study(layout_study_rows(per_layout=1), space=False, name="old-run")
    page = build_report(run_dir).read_text()
    assert "Study old-run" in page and "Objectives: val_acc (max)" in page


# ------------------------------------------------------------------ colours
def test_color_by_a_parameter_without_its_prefix(write_study):
    rows = layout_study_rows(per_layout=1, troubles=False)
    for i, row in enumerate(rows):
        row["param.head_dim"] = 16 * (1 + i % 2)
    run_dir = write_study(rows)
    page = build_report(run_dir, color_by="head_dim").read_text()
    assert "<code>param.head_dim</code>" in page
    payload = figure_payload(page, "fig-pareto-flops")
    assert '"name":"16"' in payload and '"name":"32"' in payload


def test_color_by_a_continuous_parameter_uses_a_colour_scale(write_study):
    rows = layout_study_rows(per_layout=3, troubles=False)
    for i, row in enumerate(rows):
        row["param.width_multiplier"] = 0.5 + i / 20
    page = build_report(write_study(rows), color_by="param.width_multiplier").read_text()
    payload = figure_payload(page, "fig-pareto-flops")
    assert '"colorbar"' in payload and '"colorscale"' in payload
    assert '"name":"C-C-T-T"' in figure_payload(page, "fig-gap")  # groups fall back to layout


# ------------------------------------------------------------------ errors
def test_errors_name_the_file(tmp_path, write_study):
    with pytest.raises(ReportError, match="no such run directory"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"results.csv: no results table"):
        build_report(tmp_path / "empty")
    run_dir = write_study(layout_study_rows(per_layout=1))
    with pytest.raises(ReportError, match="expected a run directory"):
        build_report(run_dir / "results.csv")
    with pytest.raises(ReportError, match="ending in .html"):
        build_report(run_dir, out=run_dir / "report.png")
    with pytest.raises(ReportError, match="--color-by nope: no such column"):
        build_report(run_dir, color_by="nope")
    (run_dir / "space.yaml").write_text("objectives: [accuracy]\n")
    with pytest.raises(ReportError, match=r"space.yaml: objectives\[0\]"):
        load_run(run_dir)
    (run_dir / "space.yaml").write_text("objectives: [\n")
    with pytest.raises(ReportError, match="space.yaml: malformed YAML"):
        load_run(run_dir)


def test_static_export_without_kaleido_says_so(study, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    with pytest.raises(ReportError, match=r"--static png: kaleido is not installed; pip install 'coatsearch\[static\]'"):
        build_report(study, static=["png"])
    with pytest.raises(ReportError, match="expected png or svg"):
        build_report(study, static=["gif"])


def test_a_static_export_that_kaleido_fails_is_one_line_and_keeps_the_html(study, monkeypatch):
    import types

    import plotly.io as pio

    from coatsearch.report import page

    monkeypatch.setitem(sys.modules, "kaleido", types.ModuleType("kaleido"))
    monkeypatch.setattr(page, "find_chromium", lambda: "/usr/bin/chromium")

    def browser_gave_up(*args, **kwargs):
        raise RuntimeError("Failed to start the browser\n(a long kaleido traceback)")

    monkeypatch.setattr(pio, "write_images", browser_gave_up)
    with pytest.raises(ReportError) as failed:
        build_report(study, static=["png"])
    assert str(failed.value) == "--static png: kaleido could not export the figures (Failed to start the browser)"
    assert (study / "report.html").stat().st_size > 0  # written before the export

    def unwritable(figures, paths, **kwargs):
        raise PermissionError(13, "Permission denied", str(paths[0]))

    monkeypatch.setattr(pio, "write_images", unwritable)
    with pytest.raises(ReportError, match=r"^--static png: cannot write \S+report-\S+\.png \(Permission denied\)$"):
        build_report(study, static=["png"])


def test_parse_band():
    assert parse_band(None) is None
    assert parse_band("0.2") == 0.2
    assert parse_band("28M:36M") == (28e6, 36e6)
    for bad in ("2", "36M:28M", "x:y", "wide"):
        with pytest.raises(ReportError, match="--flop-band"):
            parse_band(bad)


# ------------------------------------------------------------------ command line
runner = CliRunner()


def test_cli_writes_the_report(study, tmp_path):
    out = tmp_path / "r" / "page.html"
    result = runner.invoke(app, ["report", str(study), "-o", str(out), "--color-by", "status"])
    assert result.exit_code == 0, result.output
    assert "page.html" in result.stdout and out.exists()
    assert "<code>status</code>" in out.read_text()


def test_cli_prints_csv_and_markdown(study):
    result = runner.invoke(app, ["report", str(study), "--format", "csv", "--table", "top", "--top", "3"])
    assert result.exit_code == 0, result.output
    top = pd.read_csv(io.StringIO(result.stdout))
    assert len(top) == 3 and "flops" in top and "spec" not in top
    result = runner.invoke(app, ["report", str(study), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "### Pareto set of layouts" in text and "### Failed, diverged and infeasible" in text
    assert "FLOPs (mult-adds)" in text and "|--------:|" in text  # numbers right-aligned
    assert "RuntimeError: out of memory" in text
    assert text.rstrip().endswith("FLOPs are multiply-adds counted once (fvcore's convention).")
    result = runner.invoke(app, ["report", str(study), "--format", "csv"])
    assert result.stdout.count("\n# ") == 2 and result.stdout.startswith("# Pareto set")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--format", "xml"], "--format xml: expected html, csv or markdown"),
        (["--format", "csv", "--table", "best"], "--table best: expected pareto, top, failures or all"),
        (["--flop-band", "lots"], "--flop-band lots: expected a fraction"),
        (["--color-by", "nope"], "--color-by nope: no such column"),
    ],
)
def test_cli_bad_options_are_one_line(study, args, message):
    result = runner.invoke(app, ["report", str(study), *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_missing_run_dir_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "coatsearch.cli", "report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"


def test_run_writes_the_report(tmp_path, monkeypatch, write_study):
    """`coatsearch run` ends with the report of the run directory it wrote."""
    import coatsearch.runner as runner_module

    run_dir = write_study(layout_study_rows(per_layout=1))

    def fake_run_study(plan, out, address=None, console=None):
        return runner_module.StudyOutcome(run_dir, run_dir / "results.csv", 7, False, run_dir / "pareto.csv")

    monkeypatch.setattr(runner_module, "run_study", fake_run_study)
    result = runner.invoke(app, ["run", "spaces/layouts.yaml", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"report: {run_dir / 'report.html'}" in result.stdout.replace("\n", "")
    assert (run_dir / "report.html").exists()


# ------------------------------------------------------------------ effects of the searched parameters
def _split_rows(rng, accuracies: dict[int, list[float]], val_images: int = 1000) -> list[dict]:
    rows = []
    for split, values in accuracies.items():
        for seed, acc in enumerate(values):
            row = synthetic_row(len(rows), "C-C-T-T", rng, **{"param.split": split, "param.seed": seed, "seed": seed})
            row.update(val_acc=acc, val_images=val_images)
            rows.append(row)
    return rows


def test_effects_are_per_value_means_with_intervals(write_study):
    from coatsearch.report.data import load_run

    rng = np.random.default_rng(0)
    run_dir = write_study(_split_rows(rng, {1: [0.80, 0.82, 0.81], 2: [0.86, 0.88, 0.87]}))
    run = load_run(run_dir)
    assert run.design.factors == ("param.split",)  # the seed is the repeat axis, not a factor
    found = run.analysis.effect_of("split")
    one, two = found.levels
    assert (one.value, one.n, two.value) == ("1", 3, "2")
    assert one.mean == pytest.approx(0.81) and two.mean == pytest.approx(0.87)
    seeds_only = 4.302653 * 0.01 / np.sqrt(3)  # t(2) quantile x std / sqrt(n)
    assert one.high - one.mean > seeds_only  # the validation set's binomial error widens it
    tested = run.analysis.comparisons
    (comparison,) = tested[tested["metric"] == "val_acc"].itertuples()
    assert comparison.difference == pytest.approx(-0.06) and comparison.p < 0.01
    assert comparison.verdict == "1 < 2"


def test_the_report_answers_the_searched_question(write_study):
    rng = np.random.default_rng(0)
    rows = _split_rows(rng, {1: [0.80, 0.82], 2: [0.86, 0.88], 3: [0.84, 0.85]})
    run_dir = write_study(rows)
    space = run_dir / "space.yaml"
    space.write_text(space.read_text() + "params: {split: {choices: [1, 2, 3]}, seed: {choices: [0, 1]}}\n"
                     "budget: {flops: 32M, tolerance: 0.03}\n")
    build_report(run_dir)
    page = (run_dir / "report.html").read_text()
    payload = figure_payload(page, "fig-effect-split")
    assert '"title":{"text":"split"}' in payload.replace(" ", "")  # x axis: the searched parameter
    assert page.index('id="effects"') < page.index('id="pareto"')  # the question comes first
    assert "cost is equal by construction, so no front is drawn" in figure_payload(page, "fig-pareto-flops")
    assert "Pareto front (" not in figure_payload(page, "fig-pareto-flops")
    effects_csv = pd.read_csv(run_dir / "effects.csv")
    assert effects_csv["value"].tolist() == [1, 2, 3] and (effects_csv["val_acc_ci95_low"] < effects_csv["val_acc_mean"]).all()
    tested = pd.read_csv(run_dir / "comparisons.csv")
    val = tested[tested["metric"] == "val_acc"]
    # a number: neighbours, in order, then a trend and a curvature over all three values
    assert list(zip(val["kind"], val["first"], val["second"])) == [
        ("pair", 1, 2), ("pair", 2, 3), ("trend", 1, 3), ("curvature", 1, 3)]
    assert val["trials"].tolist() == [4, 4, 6, 6]
    assert "colored by <code>param.split</code>" in page or "coloured by <code>param.split</code>" in page


def test_importances_need_two_varying_parameters(write_study):
    from coatsearch.analysis import effects

    rng = np.random.default_rng(1)
    rows = []
    for i, (split, head) in enumerate([(s, h) for s in (1, 2, 3) for h in (16, 32)] * 4):
        row = synthetic_row(i, "C-C-T-T", rng, **{"param.split": split, "param.head_dim": head})
        row["val_acc"] = 0.7 + 0.05 * split + rng.normal(0, 0.002)  # split matters, head_dim does not
        rows.append(row)
    table = pd.read_csv(write_study(rows) / "results.csv")
    found = effects.importances(table, ["param.split", "param.head_dim"])
    assert found["split"] > 0.8 > found["head_dim"]
    assert effects.importances(table, ["param.split"]) is None


def test_best_is_chosen_by_the_runs_own_objectives(write_study):
    """The analysis ranks by the run's own objectives: a run that minimises latency names
    its fastest configuration best (as `coatsearch best` does), not the most accurate one."""
    rows = layout_study_rows(per_layout=1, troubles=False)
    for k, row in enumerate(rows):
        row["latency_ms"] = 10.0 - k  # the last trial is the fastest
    by_accuracy = max(range(len(rows)), key=lambda k: rows[k]["val_acc"])
    assert by_accuracy != len(rows) - 1  # else the test says nothing
    fast = write_study(rows, objectives=("latency_ms", "val_acc"))
    assert load_run(fast).analysis.best.trial["trial"] == len(rows) - 1
    accurate = write_study(rows, objectives=("val_acc", "flops"), name="accurate")
    assert load_run(accurate).analysis.best.trial["trial"] == by_accuracy


def test_a_run_reports_and_prints_its_analysis_without_reading_back_what_it_wrote(tmp_path, monkeypatch, write_study):
    """`coatsearch run` hands the table it wrote, with its analysis, to the terminal and the
    report: no results.csv, pareto.csv or effects.csv is read back."""
    import coatsearch.results as results_module
    import coatsearch.runner as runner_module
    from coatsearch.analysis.overview import DEFAULT_OBJECTIVES

    run_dir = write_study(layout_study_rows(per_layout=2))
    table = read_table(run_dir / "results.csv")
    space = yaml.safe_load(open("spaces/layouts.yaml").read())

    def fake_run_study(plan, out, address=None, console=None):
        return runner_module.StudyOutcome(run_dir, run_dir / "results.csv", 7, False, run_dir / "pareto.csv",
                                          table=table, params=space.get("params", {}), sampler=space.get("sampler"),
                                          objectives=DEFAULT_OBJECTIVES + (("flops", "min"),))

    def no_reading(*args, **kwargs):
        raise AssertionError("a table was read back")

    monkeypatch.setattr(runner_module, "run_study", fake_run_study)
    monkeypatch.setattr(results_module, "_parse", no_reading)
    monkeypatch.setattr(pd, "read_csv", no_reading)
    result = runner.invoke(app, ["run", "spaces/layouts.yaml", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.stdout and "best: trial" in result.stdout
    assert (run_dir / "report.html").exists() and (run_dir / "pareto.csv").exists()
