"""The report's view of what early stopping did: the hypervolume found against the
compute spent, and the epoch each trial stopped at.

Left: the hypervolume of validation accuracy against FLOPs of the complete, full-fidelity
trials that had ended, as a fraction of the run's final hypervolume, against the training
seconds spent by every trial that had ended (stopped ones included), in the order trials
ended (the replay's clock, else trial number). It says how soon a search found its front
and what the stopped trials cost. Right: every trial's epochs trained against its number,
stopped trials marked, so the rungs show as rows of points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coatsearch.analysis.fronts import hypervolume_2d

STATUS_COLORS = {"complete": "#1f77b4", "stopped": "#d62728", "diverged": "#9467bd", "failed": "#7f7f7f"}


def hypervolume_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Per trial that ended, in the order they ended: ``compute`` (training seconds so far)
    and ``hypervolume`` (of the full-fidelity front so far, as a fraction of the final one)."""
    ended = table[table["status"].isin(list(STATUS_COLORS))].copy()
    if ended.empty:
        return pd.DataFrame(columns=["trial", "compute", "hypervolume"])
    order = ["clock_end", "trial"] if "clock_end" in ended and ended["clock_end"].notna().all() else ["trial"]
    ended = ended.sort_values(order)
    full = (ended["status"] == "complete") & (ended["fidelity"] == ended["max_fidelity"])
    points = ended.loc[full, ["val_acc", "flops"]].dropna().astype(float)
    if points.empty:
        return pd.DataFrame(columns=["trial", "compute", "hypervolume"])
    reference = (float(points["val_acc"].min()), float(points["flops"].max()) * 1.05)
    found: list[tuple[float, float]] = []
    volumes = []
    for index in ended.index:
        if index in points.index:
            found.append((float(points.at[index, "val_acc"]), float(points.at[index, "flops"])))
        volumes.append(hypervolume_2d(np.array(found).reshape(-1, 2), (True, False), reference) if found else 0.0)
    final = volumes[-1] or 1.0
    return pd.DataFrame({"trial": ended["trial"].to_numpy(),
                         "compute": ended["wall_time"].fillna(0).astype(float).cumsum().to_numpy(),
                         "hypervolume": np.array(volumes) / final})


def schedule_figure(table: pd.DataFrame) -> go.Figure | None:
    """Hypervolume against compute, and the epoch each trial ended at (None before any trial ended)."""
    curve = hypervolume_curve(table)
    ended = table[table["status"].isin(list(STATUS_COLORS))]
    if ended.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("hypervolume found against compute spent",
                                                        "epochs each trial trained"))
    if not curve.empty:
        fig.add_trace(go.Scatter(x=curve["compute"] / 3600, y=curve["hypervolume"], mode="lines",
                                 line_shape="hv", name="hypervolume", showlegend=False,
                                 customdata=curve["trial"], hovertemplate="after trial %{customdata}: "
                                 "%{y:.1%} at %{x:.2f} h<extra></extra>"), row=1, col=1)
    for status, color in STATUS_COLORS.items():
        part = ended[ended["status"] == status]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(x=part["trial"], y=part["fidelity"], mode="markers", name=status,
                                 marker={"color": color, "size": 7, "symbol": "x" if status == "stopped" else "circle"},
                                 hovertemplate="trial %{x}: %{y} epochs<extra>" + status + "</extra>"), row=1, col=2)
    fig.update_xaxes(title_text="training time spent (hours, all trials that ended)", row=1, col=1)
    fig.update_yaxes(title_text="fraction of the run's final hypervolume", tickformat=".0%", row=1, col=1)
    fig.update_xaxes(title_text="trial", row=1, col=2)
    fig.update_yaxes(title_text="epochs trained", dtick=1, row=1, col=2)
    fig.update_layout(template="plotly_white", height=380, margin={"t": 40})
    return fig
