"""The report's figures, each built from the results table alone.

- Pareto fronts: validation accuracy against a cost (FLOPs, parameters, latency), every
  trial a point, the 2-D non-dominated front as a staircase, and its hypervolume.
- Training curves and the generalization gap (train minus validation accuracy) per group.
- The design-space view of pycls (Radosavovic et al., 2019/2020): the empirical
  distribution function (EDF) of validation error per group, among trials of similar FLOPs,
  which compares *families* of networks rather than single winners.

Accuracies are fractions and shown as percentages. Costs are minimised and accuracy is
maximised in every plot, whatever the study optimised; the study's own Pareto set is a
table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coatsearch.analysis.effects import Effect
from coatsearch.analysis.fits import ScalingFits
from coatsearch.analysis.fronts import COST_NAMES
from coatsearch.analysis.ranking import final_gap, flop_band
from coatsearch.report.data import Run, colors_for, group_labels, group_order, is_categorical
from coatsearch.results import history_of
from coatsearch.units import format_count

#: Costs a front can be drawn against, with their axis titles.
COSTS = {
    "flops": "FLOPs (multiply-adds, log scale)",
    "params": "parameters (log scale)",
    "latency_ms": "latency, batch 1 (ms, log scale)",
}

TEMPLATE = "plotly_white"
NOT_RANKED = "not ranked (stopped early, diverged or failed)"


@dataclass(frozen=True)
class Grouping:
    """Which column splits trials into groups, in which order, with which colours."""

    column: str
    order: list[str]
    colors: dict[str, str]

    @classmethod
    def of(cls, table: pd.DataFrame, column: str) -> Grouping:
        order = group_order(table, column) if len(table) else []
        return cls(column, order, colors_for(order))

    def labels(self, frame: pd.DataFrame) -> pd.Series:
        return group_labels(frame, self.column)


@dataclass(frozen=True)
class Coloring:
    """How points are coloured: by groups, or (for a numeric column) on a colour scale.

    Figures that need groups (curves, gaps, EDFs) use ``groups``: the colour column when it
    is categorical, else the layout.
    """

    column: str
    categorical: bool
    groups: Grouping

    @classmethod
    def of(cls, table: pd.DataFrame, column: str) -> Coloring:
        categorical = is_categorical(table[column]) if len(table) else True
        return cls(column, categorical, Grouping.of(table, column if categorical else "layout"))


def _text(value: Any, count: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if count:
        return format_count(float(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hover_data(frame: pd.DataFrame, color_column: str) -> list[list[str]]:
    """The spec summary each point shows on hover."""
    rows = []
    for record in frame.to_dict("records"):
        epochs = f"{_text(record.get('fidelity'))}/{_text(record.get('max_fidelity'))}"
        rows.append([
            _text(record.get("trial")), _text(record.get("layout")), _text(record.get("blocks")),
            _text(record.get("channels")), _text(record.get("params"), True), _text(record.get("flops"), True),
            epochs, _text(record.get("status")), f"{color_column} {_text(record.get(color_column))}",
        ])
    return rows


HOVER = (
    "<b>trial %{customdata[0]}</b> · %{customdata[1]} · %{customdata[7]}<br>"
    "blocks %{customdata[2]}<br>channels %{customdata[3]}<br>"
    "params %{customdata[4]} · FLOPs %{customdata[5]} (multiply-adds)<br>"
    "val acc %{y:.2%} · epochs run %{customdata[6]}<extra>%{customdata[8]}</extra>"
)


def _points(frame: pd.DataFrame, metric: str, coloring: Coloring, **style: Any) -> list[go.Scatter]:
    """Scatter traces of ``frame``: one per group, or one on a colour scale."""
    common = dict(x=frame[metric], y=frame["val_acc"], mode="markers", hovertemplate=HOVER)
    if not coloring.categorical:
        values = frame[coloring.column]
        return [go.Scatter(
            **common, customdata=_hover_data(frame, coloring.column), name=coloring.column,
            marker=dict(color=values, colorscale="Viridis", size=9, colorbar=dict(title=coloring.column), **style),
        )]
    traces = []
    labels = coloring.groups.labels(frame)
    for group in coloring.groups.order:
        part = frame[labels == group]
        if part.empty:
            continue
        traces.append(go.Scatter(
            x=part[metric], y=part["val_acc"], mode="markers", hovertemplate=HOVER, name=group,
            legendgroup=group, customdata=_hover_data(part, coloring.column),
            marker=dict(color=coloring.groups.colors[group], size=9, **style),
        ))
    return traces


def pareto_figure(run: Run, metric: str, coloring: Coloring) -> go.Figure | None:
    """Validation accuracy against ``metric`` (log axis), with the 2-D front and hypervolume.

    When the study matched every candidate to a FLOP budget, the FLOPs differ by rounding
    only: the figure says so and draws no front over that noise."""
    matched = run.study.budget is not None and run.study.budget.startswith(metric)
    table = run.table.dropna(subset=["val_acc", metric])
    if table.empty:
        return None
    ranked = run.ranked.dropna(subset=["val_acc", metric])
    others = table[~table.index.isin(ranked.index)]
    fig = go.Figure()
    for trace in _points(ranked, metric, coloring, line=dict(width=0.5, color="white")):
        fig.add_trace(trace)
    if not others.empty:
        fig.add_trace(go.Scatter(
            x=others[metric], y=others["val_acc"], mode="markers", name=NOT_RANKED,
            customdata=_hover_data(others, coloring.column), hovertemplate=HOVER,
            marker=dict(symbol="circle-open", size=9, color="#7f7f7f"),
        ))
    title = f"Validation accuracy vs {COST_NAMES[metric]}"
    if matched:
        title += (f"<br><sup>every candidate was matched to {run.study.budget}: cost is equal by construction, "
                  "so no front is drawn</sup>")
    elif (found := run.analysis.cost_fronts.get(metric)) is not None:
        front = found.front
        fig.add_trace(go.Scatter(
            x=front[metric], y=front["val_acc"], mode="lines", line=dict(shape="hv", color="black", width=1.5),
            name=f"Pareto front ({len(front)})", hoverinfo="skip",
        ))
        if found.hypervolume is not None:
            title += f"<br><sup>{found.hypervolume.describe()}</sup>"
    fig.update_layout(
        template=TEMPLATE, title=title, height=520, legend=dict(title=coloring.column),
        xaxis=dict(type="log", title=COSTS[metric]),
        yaxis=dict(title="validation accuracy", tickformat=".1%"),
    )
    return fig


def curves_figure(run: Run, grouping: Grouping) -> go.Figure | None:
    """Training loss and validation accuracy per epoch, one line per trial."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation accuracy"), horizontal_spacing=0.08)
    labels = grouping.labels(run.table)
    shown: set[str] = set()
    drawn = 0
    for index, row in run.table.sort_values("trial").iterrows():
        history = history_of(row)
        if not history:
            continue
        group = labels[index]
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        name = f"trial {_text(row['trial'])} ({_text(row['status'])})"
        for col, key, fmt in ((1, "train_loss_running", ".4f"), (2, "val_acc", ".2%")):
            fig.add_trace(go.Scatter(
                x=epochs, y=[h.get(key) for h in history], mode="lines+markers", name=group,
                legendgroup=group, showlegend=group not in shown, line=dict(color=grouping.colors[group], width=1.5),
                marker=dict(size=5), hovertemplate=f"{name}<br>epoch %{{x}}<br>{key} %{{y:{fmt}}}<extra>{group}</extra>",
            ), row=1, col=col)
            shown.add(group)
        drawn += 1
    if not drawn:
        return None
    fig.update_layout(
        template=TEMPLATE, height=460, legend=dict(title=grouping.column),
        title=f"Training curves ({drawn} trials)",
    )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="training loss (running, train mode)", row=1, col=1)
    fig.update_yaxes(title_text="validation accuracy", tickformat=".1%", row=1, col=2)
    return fig


def gap_figure(run: Run, grouping: Grouping) -> go.Figure | None:
    """Generalization gap at the final epoch per group, as boxes with every trial shown."""
    ranked = run.ranked.assign(_gap=lambda f: final_gap(f)).dropna(subset=["_gap"])
    labels = grouping.labels(ranked)
    if ranked.empty or labels.value_counts().max() < 2:  # a box of one trial says nothing of a spread
        return None
    fig = go.Figure()
    for group in grouping.order:
        part = ranked[labels == group]
        if part.empty:
            continue
        fig.add_trace(go.Box(
            y=part["_gap"], name=group, boxpoints="all", jitter=0.4, pointpos=0,
            marker=dict(color=grouping.colors[group], size=7), line=dict(width=1.5),
            customdata=part["trial"], hovertemplate="trial %{customdata}<br>gap %{y:.2%}<extra>" + group + "</extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, height=440, showlegend=False,
        title="Generalization gap at the final epoch (train − validation accuracy), complete trials",
        xaxis=dict(title=grouping.column), yaxis=dict(title="train − validation accuracy", tickformat=".1%"),
    )
    return fig


def edf_figure(run: Run, grouping: Grouping, band: float | tuple[float, float] | None = None) -> go.Figure | None:
    """EDF of validation error per group among ranked trials within a FLOP band."""
    ranked = run.ranked.dropna(subset=["val_acc", "flops"])
    if ranked.empty:
        return None
    low, high, how = flop_band(ranked["flops"], band)
    inside = ranked[(ranked["flops"] >= low) & (ranked["flops"] <= high)]
    labels = grouping.labels(inside)
    if inside.empty or labels.value_counts().max() < 2:  # an EDF of one trial is a single step
        return None
    errors = 1.0 - inside["val_acc"]
    right = float(errors.max()) if len(errors) else 1.0
    fig = go.Figure()
    for group in grouping.order:
        part = inside[labels == group].sort_values("val_acc", ascending=False)
        if part.empty:
            continue
        error = (1.0 - part["val_acc"]).to_numpy()
        n = len(error)
        x = [error[0], *error, right]
        y = [0.0, *(np.arange(1, n + 1) / n), 1.0]
        trials = ["", *part["trial"].map(_text), ""]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines", line=dict(shape="hv", color=grouping.colors[group], width=2),
            name=f"{group}: n={n}, best {error.min():.2%}, mean {error.mean():.2%}",
            customdata=trials, hovertemplate="trial %{customdata}<br>error %{x:.2%}<br>F %{y:.2f}<extra>" + group + "</extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, height=480, legend=dict(title=f"{grouping.column} (error)"),
        title=(
            "Design space: EDF of validation error per group<br>"
            f"<sup>{len(inside)} of {len(ranked)} complete trials with FLOPs in "
            f"{format_count(low)}–{format_count(high)} multiply-adds ({how})</sup>"
        ),
        xaxis=dict(title="validation error", tickformat=".1%"),
        yaxis=dict(title="cumulative fraction of trials", range=[0, 1.02]),
    )
    return fig


# --------------------------------------------------------------------------- scaling
def scaling_figure(info: ScalingFits | None) -> go.Figure | None:
    """Error against FLOPs on log axes: trials as points, log-linear fits as lines (a
    group whose fit failed is drawn as points only)."""
    if info is None or not info.ladders:
        return None
    fig = go.Figure()
    colors = colors_for([ladder.group for ladder in info.ladders])
    for ladder in info.ladders:
        group, flops, error = ladder.group, list(ladder.flops), list(ladder.error)
        fig.add_trace(go.Scatter(x=flops, y=error, mode="markers", name=group, legendgroup=group,
                                 marker=dict(color=colors[group], size=8, opacity=0.75),
                                 hovertemplate="FLOPs %{x:.3s}<br>val error %{y:.2%}<extra>" + group + "</extra>"))
        fit = ladder.fit
        if fit is not None:
            grid = np.exp(np.linspace(np.log(min(flops)), np.log(max(flops)), 60))
            fig.add_trace(go.Scatter(
                x=grid, y=fit(grid), mode="lines", name=f"{group}: b = {fit.b:.2f}", legendgroup=group,
                line=dict(color=colors[group], width=2),
                hovertemplate=(f"fit a·F^-b: b {fit.b:.2f} (95% CI {fit.b_ci[0]:.2f} to {fit.b_ci[1]:.2f}), "
                               f"error {fit.per_doubling:+.1%} per doubling<extra>{group}</extra>"),
            ))
    fig.update_layout(template=TEMPLATE, height=480, title="Validation error against FLOPs, with log-linear fits",
                      legend=dict(title=info.group_column.removeprefix("param.")))
    fig.update_xaxes(type="log", title_text="FLOPs (multiply-adds, log scale)")
    fig.update_yaxes(type="log", title_text="validation error (log scale)", tickformat=".1%")
    return fig


# --------------------------------------------------------------------------- effects
def effect_figure(found: Effect | None) -> go.Figure | None:
    """Validation accuracy against one searched parameter: each value's mean with its 95%
    interval (seeds and the validation set's binomial error), every trial as a point."""
    if found is None or not found.levels:
        return None
    fig = go.Figure()
    positions = [float(lv.value) for lv in found.levels] if found.numeric else list(range(len(found.levels)))
    step = min(np.diff(sorted(positions))) if len(positions) > 1 else 1.0
    for x, level in zip(positions, found.levels):
        offsets = jitter(level.n) * step
        fig.add_trace(go.Scatter(
            x=[x + o for o in offsets], y=list(level.accuracies), mode="markers", showlegend=False,
            marker=dict(color="#9ecae1", size=7),
            hovertemplate=f"{found.parameter} {level.value}<br>val acc %{{y:.2%}}<extra>trial</extra>",
        ))
    fig.add_trace(go.Scatter(  # a line only between values that have an order
        x=positions, y=[lv.mean for lv in found.levels], mode="markers+lines" if found.numeric else "markers",
        name="mean, 95% interval",
        line=dict(color="#1f77b4", width=1.5), marker=dict(size=10, color="#1f77b4"),
        error_y=dict(type="data", symmetric=False, array=[lv.high - lv.mean for lv in found.levels],
                     arrayminus=[lv.mean - lv.low for lv in found.levels], thickness=1.5, width=6),
        customdata=[[lv.n, lv.low, lv.high] for lv in found.levels],
        hovertemplate=f"{found.parameter} %{{x}}<br>mean %{{y:.2%}} [%{{customdata[1]:.2%}}, %{{customdata[2]:.2%}}]"
                      "<br>%{customdata[0]} trials<extra></extra>",
    ))
    axis: dict[str, object] = dict(title=found.parameter)
    if not found.numeric or all(float(p).is_integer() for p in positions):  # no tick at 1.5 for a count
        axis.update(tickmode="array", tickvals=positions, ticktext=[str(lv.value) for lv in found.levels])
    best = found.best()
    fig.update_layout(template=TEMPLATE, height=440, xaxis=axis, yaxis=dict(title="validation accuracy", tickformat=".1%"),
                      title=f"Validation accuracy by {found.parameter} (best: {best.value}, {best.mean:.2%} "
                            f"[{best.low:.2%}, {best.high:.2%}])", legend=dict(orientation="h", y=-0.2))
    return fig


def importance_figure(found: dict[str, float] | None) -> go.Figure | None:
    """Optuna's importances of the searched parameters for validation accuracy."""
    if not found:
        return None
    names = sorted(found, key=found.get)  # type: ignore[arg-type]
    fig = go.Figure(go.Bar(x=[found[n] for n in names], y=names, orientation="h", marker_color="#1f77b4",
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=120 + 40 * len(names), title="Parameter importances (Optuna)",
                      xaxis=dict(title="share of the variance of validation accuracy", tickformat=".0%"))
    return fig


def jitter(n: int, width: float = 0.12, seed: int = 0) -> np.ndarray:
    """Small horizontal offsets so seeds at one value do not hide each other."""
    return np.random.default_rng(seed).uniform(-width, width, n)
