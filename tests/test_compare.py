"""`coatsearch compare`: runs side by side in one page (fronts overlaid, common
configurations, settings); bad input refused in one line, and `report A B` pointing to it."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.report.compare import build_compare, load_runs, side_by_side
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.space import load_space

TABLE = "tables/fmnist32"
SUBSPACE = ["params.depth_multiplier.choices=[1]", "params.scale.choices=[1]", "backend=replay", f"table={TABLE}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two replayed runs of one space with other samplers: some configurations in both."""
    folder = tmp_path_factory.mktemp("runs")
    out = []
    for name, sampler, trials in (("random", "random", 8), ("grid", "grid", 6)):
        space = load_space(f"{TABLE}/space.yaml", [*SUBSPACE, f"sampler={sampler}", f"trials={trials}"])
        run_study(compile_space(space, check_data=False), folder / name, console=Console(file=io.StringIO()))
        out.append(folder / name)
    return out[0], out[1]


def _means(run: Path) -> dict[str, float]:
    """Mean validation accuracy per (layout, split) of a run's complete trials, from its table."""
    table = pd.read_csv(run / "results.csv")
    table = table[table["status"] == "complete"]
    return {f"layout={k[0]} split={k[1]}": v for k, v in table.groupby(["param.layout", "param.split"])["val_acc"].mean().items()}


@pytest.mark.slow
def test_compare_writes_one_page_with_each_runs_front_and_their_common_configurations(tmp_path, runs):
    a, b = runs
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    names = set(re.findall(r'"legendgroup":"([^"]+)"', page))
    assert names == {"random", "grid"}  # one legend entry (and colour) per run
    assert page.count('id="fig-front-') >= 2  # FLOPs and parameters at least
    assert 'id="card-settings-0"' in page and 'id="card-settings-1"' in page
    # the common configurations: exactly those both runs trained, each run's own mean
    ma, mb = _means(a), _means(b)
    common = side_by_side(load_runs([a, b]), [("val_acc", "max")], ["val_acc"])
    assert len(common) and set(common[("configuration", "")]) == set(ma) & set(mb)
    for _, row in common.iterrows():
        key = row[("configuration", "")]
        assert row[("val_acc", "random")] == pytest.approx(ma[key])
        assert row[("val_acc", "grid")] == pytest.approx(mb[key])


def test_report_of_two_runs_points_to_compare(runs):
    a, b = runs
    result = CliRunner().invoke(app, ["report", str(a), str(b)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and f"coatsearch compare {a} {b}" in result.output


@pytest.mark.parametrize("case", ["not-a-run", "one-run", "no-common-objective"])
def test_compare_refuses_bad_input_in_one_line(tmp_path, runs, case):
    a, b = runs
    if case == "not-a-run":
        (tmp_path / "empty").mkdir()
        args, says = [str(a), str(tmp_path / "empty")], "results.csv"
    elif case == "one-run":
        args, says = [str(a)], "two or more"
    else:
        other = tmp_path / "latency"
        shutil.copytree(b, other)
        space = yaml.safe_load((other / "space.yaml").read_text())
        (other / "space.yaml").write_text(yaml.safe_dump({**space, "objectives": ["latency_ms"]}))
        args, says = [str(a), str(other)], "share no objective"
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(app, ["compare", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert says in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_the_comparison_opens_offline_in_a_browser_without_errors(tmp_path, runs):
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")
    from tests.browser import find_chromium, visit

    if find_chromium() is None:
        pytest.skip("no Chrome/Chromium found: apt-get install chromium (or set COATSEARCH_CHROMIUM)")
    page = build_compare(list(runs), tmp_path / "cmp.html")
    # the figures drew (one plotly div per cost), and the common table sorts by its raw values
    seen = visit(page, width=1400, scripts=[
        "document.querySelectorAll('.js-plotly-plot').length",
        "document.getElementById('common-configurations').tBodies[0].rows.length",
    ])
    assert not seen.console_errors and not seen.network_requests
    assert seen.results[0] >= 2 and seen.results[1] >= 1
