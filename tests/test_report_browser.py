"""The report in a real browser: headless Chromium, offline, no console errors, a screenshot.

Skipped, with the reason, only where no Chrome/Chromium (or websocket-client, which drives
it) is installed; `.ci/run` installs Debian's chromium first.
"""

from __future__ import annotations

import io

import pytest
from conftest import layout_study_rows

from coatsearch.report import build_report
from coatsearch.space import load_space
from tests.browser import find_chromium, visit

pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chrome/Chromium found: apt-get install chromium (or set COATSEARCH_CHROMIUM) to open the report",
)

#: Click the "val acc" header of the top-trials table twice; the accuracies, in row order.
SORT_TWICE = """
(function () {
  var table = document.getElementById("top-trials");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (h) { return h.textContent === "val acc"; });
  var read = function () {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[col].dataset.v); });
  };
  heads[col].click();
  var up = read();
  heads[col].click();
  return [up, read()];
})()
"""


@pytest.fixture
def default_run(write_study):
    """A run directory shaped like the default study's (spaces/layouts.yaml), with failures."""
    run_dir = write_study(layout_study_rows(per_layout=3))
    (run_dir / "space.yaml").write_text(load_space("spaces/layouts.yaml").to_yaml())
    return run_dir


def test_report_opens_offline_without_errors(default_run, tmp_path):
    from PIL import Image

    page = build_report(default_run)
    seen = visit(page, scripts=["document.querySelectorAll('.plotly-graph-div .main-svg').length > 0", SORT_TWICE])
    assert seen.console_errors == []
    assert seen.network_requests == []
    assert seen.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    drawn, (ascending, descending) = seen.results
    assert drawn
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    shot = tmp_path / "report.png"
    shot.write_bytes(seen.screenshot)
    image = Image.open(io.BytesIO(seen.screenshot)).convert("RGB")
    assert image.width == 1280 and image.height > 3000  # the whole page, not one screen
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50  # figures drawn, not a blank page


def test_the_check_sees_errors_and_requests(tmp_path):
    """The same check fails a page that logs an error and asks the network for a script."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><script src="http://127.0.0.1:9/x.js"></script>'
        '<script>console.error("broken figure"); undefinedFunction();</script></body></html>'
    )
    seen = visit(bad, screenshot=False, timeout=30)
    assert "http://127.0.0.1:9/x.js" in seen.network_requests
    assert any("broken figure" in e for e in seen.console_errors)
    assert any("undefinedFunction" in e for e in seen.console_errors)


#: At the page's width: is the comparisons' verdict column on screen without scrolling the
#: table, and are the settings and best-configuration cards in the first screenful?
FIRST_LOOK = """
(function () {
  var table = document.getElementById("comparisons");
  var verdict = Array.prototype.find.call(table.tHead.rows[0].cells, function (h) { return h.textContent === "verdict"; });
  var box = table.parentElement.getBoundingClientRect();
  return [verdict.getBoundingClientRect().right <= box.right,
          document.getElementById("card-settings").getBoundingClientRect().bottom < 900,
          document.getElementById("card-best").getBoundingClientRect().bottom < 900];
})()
"""


def test_at_1400_px_the_cards_open_the_page_and_the_verdicts_are_on_screen(default_run):
    seen = visit(build_report(default_run), width=1400, scripts=[FIRST_LOOK])
    assert seen.console_errors == []
    assert seen.results == [[True, True, True]]
