"""One self-contained HTML page from a run directory.

plotly.js is embedded once, in the first figure, so the page opens offline (no CDN) and
stays about 5 MB however many figures it holds. Figure divs have fixed ids, so the same
results table always gives the same file. The Pareto set and the top trials are also
written as CSV beside the page.
"""

from __future__ import annotations

import html
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from coatsearch.analysis import Design, write_tables
from coatsearch.analysis.ranking import top_trials
from coatsearch.errors import first_line, os_reason
from coatsearch.files import write_atomic
from coatsearch.report import cards, confounds, figures, per_class, tables
from coatsearch.report.data import ReportError, Run, load_run, resolve_column
from coatsearch.report.schedule import schedule_figure
from coatsearch.results import own_trials
from coatsearch.units import FLOPS_NOTE

#: Plotly's per-figure options: no logo link, and resize with the window.
CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header,section,footer{max-width:1280px;margin:0 auto;padding:8px 24px}
header{border-bottom:1px solid #ddd}
h1{margin:16px 0 4px}h2{margin-top:28px;border-bottom:1px solid #eee}
nav a{margin-right:16px}
.note,.empty{color:#666}
.figure{background:#fff;margin:12px 0;border:1px solid #eee}
.tablewrap{overflow-x:auto;max-height:640px;overflow-y:auto;border:1px solid #eee;background:#fff}
table.sortable{border-collapse:collapse;font-size:13px;white-space:nowrap}
table.sortable th,table.sortable td{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
table.sortable td:nth-child(-n+3),table.sortable th:nth-child(-n+3){text-align:left}
table.sortable th{position:sticky;top:0;background:#f3f3f3;cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
table#failed-trials td:nth-child(3){white-space:normal;text-align:left;min-width:320px}
"""

#: Click a header to sort by its raw values (cells carry them in data-v); empty cells last.
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var num = th.dataset.type === "num", body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var d = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


class Page:
    """Collects the page's parts; embeds plotly.js with the first figure only."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figures: dict[str, go.Figure] = {}

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, name: str, fig: go.Figure | None, missing: str) -> None:
        if fig is None:
            self.add(f'<p class="empty">{html.escape(missing)}</p>')
            return
        div = fig.to_html(
            full_html=False, include_plotlyjs=not self.figures, div_id=f"fig-{name}", config=CONFIG,
            default_height=f"{fig.layout.height or 480}px",
        )
        self.figures[name] = fig
        self.add(f'<div class="figure">{div}</div>')

    def table(self, frame_html: str) -> None:
        self.add(f'<div class="tablewrap">{frame_html}</div>')


def _summary(run: Run) -> str:
    table = run.table
    counts = table["status"].value_counts() if len(table) else {}
    by_status = ", ".join(f"{int(n)} {html.escape(str(s))}" for s, n in dict(counts).items()) or "none yet"
    objectives = ", ".join(f"{m} ({d})" for m, d in run.study.objectives)
    return (
        f"<p>{len(table)} trials: {by_status}; {len(run.ranked)} complete at full fidelity are ranked. "
        f"Objectives: {html.escape(objectives)}.</p>"
    )


def _header(run: Run, color_column: str) -> str:
    description = f"<p>{html.escape(run.study.description)}</p>" if run.study.description else ""
    return (
        f"<header><h1>Study {html.escape(run.study.name)}</h1>{description}{_summary(run)}"
        f'<p class="note">{FLOPS_NOTE} Accuracies are on the validation split. Points and groups '
        f"are coloured by <code>{html.escape(color_column)}</code>. Every number here is computed "
        f"from <code>results.csv</code>.</p>"
        '<nav><a href="#effects">Effects</a><a href="#pareto">Pareto fronts</a><a href="#training">Training</a>'
        '<a href="#design-space">Design space</a><a href="#tables">Tables</a>'
        '<a href="#failures">Failures</a></nav></header>'
    )


def comparisons_note(design: Design) -> str:
    """How the comparisons were made, for the page."""
    where = ("within each combination of the other factors (a grid crosses them)" if design.crossed
             else "over all trials (a sampled search does not hold the other parameters fixed)")
    return (f"Tests of a parameter's values, {where}: neighbours and a trend over all values for a numeric "
            "parameter, every pair for a categorical one. Accuracies: paired image by image where every trial "
            "stored which images it got right, else Welch with each configuration's binomial bound; the seeds' "
            "spread and the images' error are separate parts with Welch-Satterthwaite degrees of freedom (the "
            "test column names the test). p is corrected across every comparison (Holm); an unresolved one "
            "states the smallest difference it would resolve with 80% power.")


def default_color(run: Run) -> str:
    """Colour by the first searched parameter (the study's question), else the layout."""
    return run.design.factors[0] if run.design.factors else "layout"


def render(
    run: Run, color_by: str | None = None, top: int = 10, flop_band: float | tuple[float, float] | None = None
) -> tuple[str, Page]:
    """The page's HTML and its parts (figures by name, for static export)."""
    color_column = resolve_column(run.table, color_by or default_color(run))
    coloring = figures.Coloring.of(run.table, color_column)
    page = Page()
    analysis = run.analysis
    page.add(f'<section id="overview">{cards.cards(run)}')
    page.figure("per-class", per_class.per_class_figure(run),
                "No per-class accuracy: the best trial's per-image record, or its data, is not at hand here.")
    page.add("</section>")
    if analysis.effects:
        page.add('<section id="effects"><h2>Effects</h2><p class="note">Validation accuracy per value of each '
                 "searched parameter: the mean of its complete, full-fidelity trials with a 95% interval that "
                 "combines the spread over seeds with the validation set's binomial error; trials as points.</p>")
        notes = confounds.shape_notes(run)
        for found in analysis.effects:
            page.figure(f"effect-{found.parameter}", figures.effect_figure(found), "No complete trial at full fidelity yet.")
            if found.parameter in notes:
                page.add(f'<p class="note" id="confound-{html.escape(found.parameter)}">'
                         f"{html.escape(notes[found.parameter])}</p>")
        if analysis.importances:
            page.figure("importances", figures.importance_figure(analysis.importances), "")
        if len(analysis.comparisons):
            page.add(f'<h3>Comparisons</h3><p class="note">{html.escape(comparisons_note(analysis.design))} '
                     "Also in <code>comparisons.csv</code>.</p>")
            page.table(tables.html_table(tables.comparisons_view(analysis.comparisons), "comparisons"))
        page.add("</section>")
    page.add('<section id="pareto"><h2>Pareto fronts</h2><p class="note">Filled points are complete '
             "trials at full fidelity; the staircase is their non-dominated front (higher accuracy, "
             "lower cost). Hover a point for its network.</p>")
    costs = [m for m in figures.COSTS if run.table[m].notna().any()] or ["flops"]
    for metric in costs:
        page.figure(f"pareto-{metric}", figures.pareto_figure(run, metric, coloring),
                    f"No trial has both a validation accuracy and {figures.COST_NAMES[metric]} yet.")
    page.add('</section><section id="training"><h2>Training</h2>')
    page.figure("curves", figures.curves_figure(run, coloring.groups), "No per-epoch history recorded yet.")
    page.figure("gap", figures.gap_figure(run, coloring.groups),
                "No gap figure: no group has two complete trials at full fidelity yet.")
    page.figure("by-trial", cards.accuracy_by_trial_figure(run), "Fewer than two complete trials at full fidelity.")
    # early stopping's effect on this run's own compute (an earlier run's warm-start trials left out)
    page.figure("schedule", schedule_figure(own_trials(run.table)), "No trial has ended yet.")
    if analysis.scaling is not None:
        page.add('</section><section id="scaling"><h2>Scaling</h2>')
        page.figure("scaling", figures.scaling_figure(analysis.scaling), "No complete trial at full fidelity yet.")
    page.add('</section><section id="design-space"><h2>Design space</h2>')
    page.figure("edf", figures.edf_figure(run, coloring.groups, flop_band),
                "No design-space EDF: no group has two complete trials at full fidelity in the FLOP band yet.")
    ranked_by = ", ".join(f"{m} ({d})" for m, d in run.analysis.objectives)
    if len(run.analysis.objectives) > 1 or len(run.study.objectives) == 1:
        heading = f"Pareto set: {ranked_by}" if len(run.analysis.objectives) > 1 else f"Best by {ranked_by}"
        why = ""
    else:  # a matched cost left out (`front_objectives`): the terminal and pareto.csv say the same
        heading = f"Best by {ranked_by}: no Pareto front"
        why = (f" Every candidate was matched to {run.study.budget or ', '.join(run.study.matched)}: cost is equal by "
               "construction, so trials are ranked by the other objective alone.")
    page.add(f'</section><section id="tables"><h2>Tables</h2><h3>{html.escape(heading)}</h3>'
             f'<p class="note">{html.escape(why)} Click a header to sort. Also in <code>pareto.csv</code>.</p>')
    page.table(tables.html_table(tables.view(run.analysis.front), "pareto-set"))
    page.add(f'<h3>Top {top} trials by validation accuracy</h3><p class="note">Also in <code>top.csv</code>.</p>')
    page.table(tables.html_table(tables.view(top_trials(run.ranked, top)), "top-trials"))
    page.add('</section><section id="failures"><h2>Failures</h2><p class="note">Trials that failed, '
             "diverged or could not be built (infeasible), with the reason recorded.</p>")
    page.table(tables.html_table(tables.view(tables.failures(run), tables.FAILURE_COLUMNS), "failed-trials"))
    page.add("</section>")
    body = "".join(page.parts)
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>coatsearch report: {html.escape(run.study.name)}</title><style>{CSS}{cards.CSS}</style></head>"
        f"<body>{_header(run, color_column)}{body}"
        f"<footer class=\"note\">coatsearch report of {html.escape(str(run.run_dir))}</footer>"
        f"<script>{SORT_JS}</script></body></html>"
    )
    return document, page


def export_static(page: Page, out: Path, fmt: str) -> list[Path]:
    """Each figure as ``<report>-<figure>.<fmt>`` through kaleido (which needs a Chromium)."""
    if fmt not in ("png", "svg"):
        raise ReportError(f"--static {fmt}: expected png or svg")
    try:
        import kaleido  # noqa: F401
    except ImportError as exc:
        if exc.name == "kaleido":
            raise ReportError(f"--static {fmt}: kaleido is not installed; pip install 'coatsearch[static]'") from None
        raise ReportError(f"--static {fmt}: kaleido is installed but does not import ({exc})") from None
    if find_chromium() is None:
        raise ReportError(f"--static {fmt}: kaleido needs Chrome or Chromium and none was found (apt-get install chromium)")
    names = list(page.figures)
    paths = [out.with_name(f"{out.stem}-{name}.{fmt}") for name in names]
    if names:  # one call: kaleido then starts its browser once for all figures
        try:
            pio.write_images(
                [page.figures[n] for n in names], paths, format=fmt, width=1200,
                height=[page.figures[n].layout.height or 480 for n in names],
            )
        except OSError as exc:
            raise ReportError(f"--static {fmt}: cannot write {exc.filename or out.parent} "
                              f"({os_reason(exc)})") from None
        except (RuntimeError, ValueError) as exc:  # kaleido's browser failed or gave up
            raise ReportError(f"--static {fmt}: kaleido could not export the figures ({first_line(exc)})") from None
    return paths


def build_report(
    run_dir: str | Path | Run,
    out: str | Path | None = None,
    color_by: str | None = None,
    top: int = 10,
    flop_band: float | tuple[float, float] | None = None,
    static: Sequence[str] = (),
) -> Path:
    """Write ``report.html`` (default: in the run directory; a `Run` held in memory is
    reported as it is, without reading its directory) and, in the run directory, the
    analysis's tables (`coatsearch.analysis.write_tables`: effects, comparisons, summary),
    pareto.csv and top.csv. A report written elsewhere (``out``) is the HTML file alone:
    the tables never overwrite files of the same names in a folder of the user's.

    ``color_by`` names a results column or a sampled parameter; ``flop_band`` is the
    design-space view's band, a fraction around the median FLOPs or ``(low, high)``;
    ``static`` lists image formats (png, svg) to export each figure in as well.
    """
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    out = Path(out) if out is not None else run.run_dir / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out}: the report is an HTML file; expected a name ending in .html")
    document, page = render(run, color_by=color_by, top=top, flop_band=flop_band)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, document)
        if out.parent.resolve() == run.run_dir.resolve():  # elsewhere, the folder is the user's
            write_tables(run.analysis, out.parent)
            write_atomic(out.parent / "pareto.csv", run.analysis.front.to_csv(index=False))
            write_atomic(out.parent / "top.csv", top_trials(run.ranked, top).to_csv(index=False))
    except OSError as exc:
        raise ReportError(f"{exc.filename or out.parent}: cannot write the report ({os_reason(exc)})") from None
    for fmt in static:
        export_static(page, out, fmt)
    return out


#: Executable names of Chrome/Chromium, tried in order (``COATSEARCH_CHROMIUM`` overrides).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """Path of a Chrome/Chromium executable (kaleido's static export needs one), or None."""
    explicit = os.environ.get("COATSEARCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None
