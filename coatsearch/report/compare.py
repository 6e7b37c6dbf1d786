"""Runs side by side (``coatsearch compare RUN_A RUN_B ...``): one self-contained HTML page
with the runs' fronts overlaid, their common configurations in one table, and each run's
settings, built from the same pieces as a run's own report (`coatsearch.report.page`).

A run is its results table under its own objectives; the page compares the objectives the
runs share (the same metric and direction in every run), and refuses runs that share none.
A configuration is the values a trial sampled, its seed left out: the trials of one
configuration in one run are averaged (complete and at full fidelity only, as a report
ranks them), and a configuration two or more runs trained is one row of the table.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from coatsearch.analysis.fronts import front_mask
from coatsearch.errors import os_reason
from coatsearch.files import write_atomic
from coatsearch.report import cards
from coatsearch.report.data import PALETTE, ReportError, Run, load_run
from coatsearch.report.figures import COST_NAMES, COSTS, TEMPLATE
from coatsearch.report.page import CONFIG, CSS, SORT_JS
from coatsearch.report.tables import _sort_key, format_cell
from coatsearch.results import own_trials, ranked
from coatsearch.search.rows import point_key
from coatsearch.units import FLOPS_NOTE


def load_runs(paths: Sequence[str | Path]) -> list[tuple[str, Run]]:
    """Each run directory loaded, under the name its legend shows (the folder's name, or the
    path as given where two folders share a name); `ReportError` names a folder that is not a run."""
    if len(paths) < 2:
        raise ReportError(f"compare: expected two or more run directories, got {len(paths)}; "
                          "one run's report: coatsearch report RUN_DIR")
    runs = [load_run(path) for path in paths]
    names = [Path(path).name or str(path) for path in paths]
    if len(set(names)) < len(names):
        names = [str(path) for path in paths]
    return list(zip(names, runs))


def common_objectives(runs: Sequence[tuple[str, Run]]) -> list[tuple[str, str]]:
    """The objectives every run has, with the same direction, in the first run's order;
    `ReportError` when there is none."""
    first = runs[0][1].study.objectives
    shared = [(metric, str(direction)) for metric, direction in first
              if all((metric, str(direction)) in {(m, str(d)) for m, d in run.study.objectives} for _, run in runs)]
    if not shared:
        said = "; ".join(f"{name}: {', '.join(f'{m} {d}' for m, d in run.study.objectives)}" for name, run in runs)
        raise ReportError(f"compare: the runs share no objective ({said}); compare runs ranked by the same metric")
    return shared


def _values(record: dict[str, Any]) -> dict[str, Any]:
    """A trial's configuration: its sampled values but the seed."""
    return {k[6:]: v for k, v in record.items()
            if k.startswith("param.") and k != "param.seed" and not (isinstance(v, float) and math.isnan(v))}


def own_ranked(run: Run) -> pd.DataFrame:
    """The run's own trials that rank (complete, full fidelity): an earlier run's trials
    it was warm-started with belong to that run."""
    return ranked(own_trials(run.table))


def per_configuration(run: Run, metrics: Sequence[str]) -> pd.DataFrame:
    """The run's own ranked trials averaged per configuration (`point_key` of its values):
    ``n`` and each metric's mean."""
    trials = own_ranked(run)
    if trials.empty:
        return pd.DataFrame(columns=["configuration", "n", *metrics])
    keyed = trials.assign(configuration=[point_key(_values(r)) for r in trials.to_dict("records")])
    grouped = keyed.groupby("configuration", sort=False)
    frame = grouped.size().rename("n").to_frame()
    for metric in metrics:
        frame[metric] = grouped[metric].mean() if metric in keyed else math.nan
    return frame.reset_index()


def side_by_side(runs: Sequence[tuple[str, Run]], objectives: Sequence[tuple[str, str]],
                 metrics: Sequence[str]) -> pd.DataFrame:
    """Configurations two or more runs trained: one row each, named by the values that
    differ between them, a column per (metric, run) and the trials each run averaged
    (``n``); best first by the first objective's mean over the runs."""
    parts = {name: per_configuration(run, metrics).set_index("configuration") for name, run in runs}
    counts = pd.concat([frame["n"] for frame in parts.values()], axis=1).notna().sum(axis=1)
    shared = [key for key in counts.index if counts[key] >= 2]
    if not shared:
        return pd.DataFrame()
    columns: dict[tuple[str, str], pd.Series] = {}
    for metric in [*metrics, "n"]:
        for name, frame in parts.items():
            columns[(metric, name)] = frame[metric].reindex(shared)
    table = pd.DataFrame(columns, index=shared)
    first, direction = objectives[0]
    order = table[[(first, name) for name, _ in runs]].mean(axis=1).sort_values(ascending=direction == "min")
    table = table.loc[order.index]
    every = [json.loads(key) for key in counts.index]  # what varies among all the runs' configurations
    varying = sorted({k for v in every for k in v if len({json.dumps(w.get(k), default=str) for w in every}) > 1})
    values = [json.loads(key) for key in table.index]
    labels = [" ".join(f"{k}={format_cell(k, v.get(k))}" for k in varying) or "(one configuration)" for v in values]
    table.insert(0, ("configuration", ""), labels)
    return table.reset_index(drop=True)


def fronts_figure(runs: Sequence[tuple[str, Run]], metric: str) -> go.Figure | None:
    """Validation accuracy against ``metric`` (log axis): each run's ranked trials and its
    2-D front, one colour per run. A run that matched every candidate to this cost gets
    its points and no front (the costs differ by rounding only)."""
    fig = go.Figure()
    drawn = False
    for i, (name, run) in enumerate(runs):
        points = own_ranked(run).dropna(subset=["val_acc", metric]) if metric in run.table else pd.DataFrame()
        if points.empty:
            continue
        drawn, color = True, PALETTE[i % len(PALETTE)]
        hover = [[str(r.get("trial")), str(r.get("layout")), str(r.get("blocks")), str(r.get("channels"))]
                 for r in points.to_dict("records")]
        fig.add_trace(go.Scatter(
            x=points[metric], y=points["val_acc"], mode="markers", name=name, legendgroup=name, customdata=hover,
            marker=dict(color=color, size=8, opacity=0.75),
            hovertemplate=f"<b>{html.escape(name)}</b> trial %{{customdata[0]}} · %{{customdata[1]}}<br>blocks "
                          "%{customdata[2]} · channels %{customdata[3]}<br>val acc %{y:.2%}<extra></extra>"))
        matched = run.study.budget is not None and run.study.budget.startswith(metric)
        if not matched:
            front = points[front_mask(points, metric)].sort_values([metric, "val_acc"])
            fig.add_trace(go.Scatter(
                x=front[metric], y=front["val_acc"], mode="lines", line=dict(shape="hv", color=color, width=2),
                name=f"{name} front", legendgroup=name, showlegend=False, hoverinfo="skip"))
    if not drawn:
        return None
    fig.update_layout(template=TEMPLATE, title=f"Validation accuracy vs {COST_NAMES[metric]}: each run's front",
                      height=520, legend=dict(title="run"), xaxis=dict(type="log", title=COSTS[metric]),
                      yaxis=dict(title="validation accuracy", tickformat=".1%"))
    return fig


def _runs_table(runs: Sequence[tuple[str, Run]]) -> pd.DataFrame:
    """One row per run: its study, own trials, those ranked, its best validation accuracy,
    and the earlier trials it was warm-started with (left out of everything else here)."""
    return pd.DataFrame([{
        "run": name, "study": run.study.name, "folder": str(run.run_dir), "trials": len(own_trials(run.table)),
        "ranked": len(own_ranked(run)),
        "val_acc": own_ranked(run)["val_acc"].max() if len(own_ranked(run)) else math.nan,
        "warm-start trials": len(run.table) - len(own_trials(run.table)),
    } for name, run in runs])


def _html_table(frame: pd.DataFrame, table_id: str) -> str:
    """A sortable table whose columns are (metric, run) pairs or plain names: each cell
    formatted as its metric is in a run's report, sorted by its raw value."""
    if frame.empty:
        return '<p class="empty">none</p>'

    def metric_of(column: Any) -> str:
        return column[0] if isinstance(column, tuple) else str(column)

    def head(column: Any) -> str:
        if isinstance(column, tuple):
            return f"{column[0]} · {column[1]}" if column[1] else str(column[0])
        return str(column)

    heads = "".join(f'<th data-type="{"num" if pd.api.types.is_numeric_dtype(frame[c]) else "str"}">'
                    f"{html.escape(head(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f'<td data-v="{html.escape(_sort_key(v))}">{html.escape(format_cell(metric_of(c), v))}</td>'
                         for c, v in zip(frame.columns, values)) + "</tr>"
        for values in frame.itertuples(index=False, name=None))
    return (f'<div class="tablewrap"><table class="sortable" id="{table_id}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def render_compare(runs: Sequence[tuple[str, Run]]) -> str:
    """The comparison page's HTML."""
    objectives = common_objectives(runs)
    metrics = [m for m, _ in objectives]
    shown = [*metrics, *(c for c in ("flops", "params") if c not in metrics)]
    names = ", ".join(name for name, _ in runs)
    parts = [f"<header><h1>Runs compared: {html.escape(names)}</h1>"
             f"<p>Objectives every run has: {html.escape(', '.join(f'{m} ({d})' for m, d in objectives))}. "
             "Each run's own trials (not those it was warm-started with), complete at full fidelity, as its report "
             f'ranks them.</p><p class="note">{FLOPS_NOTE} '
             "Accuracies are on each run's validation split.</p>"
             '<nav><a href="#runs">Runs</a><a href="#fronts">Fronts</a><a href="#common">Common configurations</a>'
             '<a href="#settings">Settings</a></nav></header>', '<section id="runs"><h2>Runs</h2>',
             _html_table(_runs_table(runs), "runs-table"), '</section><section id="fronts"><h2>Fronts</h2>'
             '<p class="note">Each run\'s trials in its colour, and its 2-D front as a staircase.</p>']
    first = True
    for metric in COSTS:
        fig = fronts_figure(runs, metric)
        if fig is not None:
            div = fig.to_html(full_html=False, include_plotlyjs=first, div_id=f"fig-front-{metric}", config=CONFIG,
                              default_height="520px")
            parts.append(f'<div class="figure">{div}</div>')
            first = False
    if first:
        parts.append('<p class="empty">No run has a complete trial at full fidelity with a cost yet.</p>')
    common = side_by_side(runs, objectives, shown)
    parts.append('</section><section id="common"><h2>Common configurations</h2><p class="note">Configurations '
                 "(the sampled values, seed aside) that two or more runs trained, each run's mean over its trials "
                 "of it (n: how many); a dash where a run has none.</p>")
    parts.append(_html_table(common, "common-configurations") if len(common) else
                 '<p class="empty">No configuration is in two runs: their spaces search other values.</p>')
    parts.append('</section><section id="settings"><h2>Settings</h2><div class="cards">')
    for i, (name, run) in enumerate(runs):
        card = cards.settings_card(run).replace('id="card-settings"', f'id="card-settings-{i}"', 1)
        parts.append(card.replace("<h3>Run settings</h3>", f"<h3>{html.escape(name)}</h3>", 1))
    parts.append("</div></section>")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>coatsearch compare: {html.escape(names)}</title><style>{CSS}{cards.CSS}</style></head>"
            f"<body>{''.join(parts)}<script>{SORT_JS}</script></body></html>")


def build_compare(paths: Sequence[str | Path], out: str | Path = "compare.html") -> Path:
    """Write the comparison page of the run directories ``paths`` to ``out``."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out}: the comparison is an HTML file; expected a name ending in .html")
    document = render_compare(load_runs(paths))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, document)
    except OSError as exc:
        raise ReportError(f"{exc.filename or out}: cannot write the comparison ({os_reason(exc)})") from None
    return out
