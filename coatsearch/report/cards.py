"""What a reader looks for first, at the top of the report: the run's settings, the best
configuration with the command that trains it further and a picture of its network's
stages, and accuracy by trial number (did the search still find better networks late?).
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from coatsearch.report.data import Run
from coatsearch.report.hand_off import best_train_settings, train_command
from coatsearch.results import own_trials
from coatsearch.units import format_count

CSS = """
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;flex:1 1 360px;min-width:320px}
.card h3{margin:4px 0 8px;font-size:15px}
.card dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:13px}
.card dt{color:#666}.card dd{margin:0}
.card pre{background:#f5f5f5;padding:6px 8px;white-space:pre-wrap;font-size:12px;margin:8px 0 4px}
.stages{display:flex;gap:6px;align-items:flex-end;margin:8px 0;overflow-x:auto}
.stage{border-radius:4px;padding:4px 6px;font-size:11px;text-align:center;color:#fff;min-width:56px}
.stage.C{background:#1f77b4}.stage.T{background:#d62728}.stage.stem{background:#7f7f7f}.stage.other{background:#9467bd}
"""


def _rows(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items if v) + "</dl>"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def settings_card(run: Run) -> str:
    """The run's settings: data, sizes, training, budget, search, backend and its compute."""
    settings, table = run.study.settings, run.table
    data: dict[str, Any] = settings["data"] if isinstance(settings.get("data"), dict) else {}
    train: dict[str, Any] = settings["train"] if isinstance(settings.get("train"), dict) else {}
    val = table["val_images"].dropna() if "val_images" in table else pd.Series(dtype=float)
    trained = table["train_images"].dropna() if "train_images" in table else pd.Series(dtype=float)
    sizes = [(f"train {int(trained.min())}–{int(trained.max())} images" if trained.nunique() > 1 else
              f"train {int(trained.max())} images") if len(trained) else
             (f"train {data['train_size']}" if data.get("train_size") else ""),
             f"validation {int(val.max())} images" if len(val) else
             (f"validation {data['val_fraction']:.0%}" if data.get("val_fraction") is not None else "")]
    image = table["image_size"].dropna() if "image_size" in table else pd.Series(dtype=float)
    own = own_trials(table)  # an earlier run's trials (warm_start) are not this run's work
    finished = int(own["status"].isin(["complete", "stopped", "diverged", "failed"]).sum()) if len(own) else 0
    wall = float(own["wall_time"].fillna(0).sum()) if "wall_time" in own else 0.0
    warm = len(table) - len(own)
    training = ", ".join(f"{k} {train[k]}" for k in ("epochs", "steps", "batch_size", "lr") if train.get(k) is not None)
    items = [
        ("data", f"{data.get('source', 'fashion-mnist')} (augment {data.get('augment', 'none')})"),
        ("sizes", ", ".join(s for s in sizes if s) + (f"; {int(image.iloc[0])} px" if len(image) else "")),
        ("training subset", _subset_text(data, "data.train_size" in run.study.params)),
        ("training", training),
        ("budget", run.study.budget or "none (each candidate at its own cost)"),
        ("search", f"{run.study.sampler or 'tpe'}, {finished} of {settings.get('trials', '?')} trials finished, "
                   f"seed {settings.get('seed', 0)}"),
        ("backend", f"{settings.get('backend', 'optuna')}, {settings.get('concurrency', 1)} at a time"),
        ("compute", f"{_minutes(wall)} of trial time" if wall else ""),
        ("warm start", f"{warm} trials of {settings.get('warm_start', 'an earlier run')} given to the sampler first "
                       "(the warm_start column; not counted above)" if warm else ""),
    ]
    return f'<div class="card" id="card-settings"><h3>Run settings</h3>{_rows(items)}</div>'


def _subset_text(data: dict[str, Any], searched: bool) -> str:
    """How the ``train_size`` subset was drawn (`coatsearch.space.DataSettings.subset`);
    empty where every training image was used and the subset fixed."""
    sized = bool(data.get("train_size")) or searched
    if data.get("subset") == "per_seed":
        return ("drawn per training seed; validation and test the same images for every seed" if sized
                else "per seed, but no train_size: every training image is used")
    return "the same images for every seed (drawn by the space's seed)" if sized else ""


def _stages(spec: dict[str, Any]) -> str:
    """The network's stages as boxes: kind, blocks, width and the token grid each sees."""
    from coatsearch.spec import NetSpec, SpecError

    try:
        net = NetSpec.from_dict(spec)
    except (SpecError, ValueError, TypeError):
        return ""
    sizes = net.resolutions()
    stem = net.stem.stride
    boxes = [f'<div class="stage stem" style="height:36px">S0 stem<br>{net.stem.channels} ch, '
             f"{net.image_size // stem}²</div>"]
    widest = max(s.channels for s in net.stages)
    for i, (stage, size) in enumerate(zip(net.stages, sizes), start=1):
        kind = stage.kind if stage.kind in ("C", "T") else "other"
        height = 36 + int(60 * stage.channels / widest)
        label = {"C": "MBConv", "T": "Transformer"}.get(stage.kind, stage.kind)
        boxes.append(f'<div class="stage {kind}" style="height:{height}px" title="stage {i}">S{i} {label}<br>'
                     f"×{stage.blocks}, {stage.channels} ch<br>{size}×{size} tokens</div>")
    return f'<div class="stages">{"".join(boxes)}</div>'


def best_card(run: Run) -> str:
    """The best configuration over seeds by the run's objectives, its network and the
    command that hands it on to training."""
    best = run.analysis.best
    if best is None:
        return '<div class="card" id="card-best"><h3>Best configuration</h3><p class="empty">No complete trial yet.</p></div>'
    trial = best.trial
    values = ", ".join(f"{k} = {v}" for k, v in best.values.items()) or "(the one configuration)"
    means = ", ".join(f"{m} {v:.2%}" if m.endswith("acc") else f"{m} {format_count(v)}" for m, v in best.means.items())
    network = f"{trial.get('layout')}, blocks {trial.get('blocks')}, channels {trial.get('channels')}"
    cost = f"{format_count(float(trial['flops']))} FLOPs, {format_count(float(trial['params']))} params" \
        if pd.notna(trial.get("flops")) and pd.notna(trial.get("params")) else ""
    spec = trial.get("spec")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            spec = None
    picture = _stages(spec) if isinstance(spec, dict) else ""
    command = f"coatsearch best {run.run_dir} -o best.yaml\n{train_command('best.yaml', best_train_settings(run))}"
    items = [("values", values), ("mean", f"{means} over {best.seeds} seed(s)"),
             ("trial", f"{int(trial['trial'])} (the seed nearest the mean)"), ("network", network), ("cost", cost)]
    return (f'<div class="card" id="card-best"><h3>Best configuration</h3>{_rows(items)}{picture}'
            f"<pre>{html.escape(command)}</pre></div>")


def cards(run: Run) -> str:
    return f'<div class="cards">{settings_card(run)}{best_card(run)}</div>'


def accuracy_by_trial_figure(run: Run) -> go.Figure | None:
    """Validation accuracy of each ranked trial by its number, with the best so far."""
    ranked = run.ranked.dropna(subset=["val_acc"]).sort_values("trial")
    if len(ranked) < 2:
        return None
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ranked["trial"], y=ranked["val_acc"], mode="markers", name="trial",
                             marker=dict(size=8, color="#1f77b4"),
                             hovertemplate="trial %{x}<br>val acc %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=ranked["trial"], y=ranked["val_acc"].cummax(), mode="lines", name="best so far",
                             line=dict(shape="hv", color="black", width=1.5)))
    fig.update_layout(template="plotly_white", height=360, title="Validation accuracy by trial number",
                      xaxis=dict(title="trial", tickformat="d", dtick=max(1, len(ranked) // 10)),
                      yaxis=dict(title="validation accuracy", tickformat=".1%"), legend=dict(orientation="h", y=-0.25))
    return fig

