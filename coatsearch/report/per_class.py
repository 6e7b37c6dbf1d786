"""Per-class validation accuracy of the best network: which classes it gets wrong.

A trial's row keeps which validation images it got right (`coatsearch.perimage`) but not
their labels; the labels come from reading the run's data again as its trials read it
(the saved space's data settings and seed). The set's fingerprint must match the row's, so
a per-class figure is only drawn for the very images the trial was scored on; data that
cannot be read here (moved, on a cluster) gives no figure.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from coatsearch import perimage
from coatsearch.errors import CoatsearchError
from coatsearch.report.data import Run


def per_class_figure(run: Run) -> go.Figure | None:
    """Bars of each class's validation accuracy for the best configuration's trial."""
    best = run.analysis.best
    if best is None:
        return None
    cell = perimage.decode(best.trial.get("val_correct"))
    if cell is None or best.trial.get("image_size") is None:
        return None
    labels, classes = _labels(run, int(best.trial["image_size"]))
    if labels is None or len(labels) != len(cell.bits) or perimage.fingerprint(labels) != cell.fingerprint:
        return None
    present = [k for k in range(len(classes)) if (labels == k).any()]
    accuracy = [float(cell.bits[labels == k].mean()) for k in present]
    counts = [int((labels == k).sum()) for k in present]
    names = [classes[k] for k in present]
    fig = go.Figure(go.Bar(
        x=accuracy, y=names, orientation="h", marker=dict(color="#1f77b4"), customdata=counts,
        hovertemplate="%{y}<br>val acc %{x:.1%} of %{customdata} images<extra></extra>",
    ))
    fig.update_layout(
        template="plotly_white", height=max(260, 28 * len(names) + 120),
        title=f"Per-class validation accuracy of the best network (trial {int(best.trial['trial'])}, "
              f"{cell.accuracy:.2%} overall)",
        xaxis=dict(title="validation accuracy", tickformat=".0%", range=[0, 1]),
        yaxis=dict(autorange="reversed"),
    )
    return fig


def _labels(run: Run, image_size: int) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The validation labels and class names of the run's data, read as its trials read it."""
    from coatsearch.search.inputs import load_trial_data
    from coatsearch.space import DataSettings

    data = run.study.settings.get("data")
    try:
        settings = DataSettings.model_validate(data if isinstance(data, dict) else {})
        bundle = load_trial_data(settings, image_size, int(run.study.settings.get("seed", 0)))
    except (CoatsearchError, ValueError, OSError):
        return None, ()
    return bundle.val.labels.cpu().numpy(), tuple(bundle.classes)
