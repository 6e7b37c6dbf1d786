"""One trial, the same for every backend: sampled parameters in, one results row out.

The backends only decide *which* parameters to try and *where*; they hand each trial to
`run_trial` with a `report` callback (called after every epoch; returning True stops the
trial early) and store the row it returns.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from typing import Any, Callable

import torch

from coatsearch.search.candidate import Candidate, InfeasibleCandidate, make_candidate
from coatsearch.space import SearchSpace

#: (epoch, metrics) -> stop?
Report = Callable[[int, dict[str, Any]], bool]

_DATA_CACHE: dict[tuple[Any, ...], Any] = {}


def load_trial_data(space: SearchSpace, image_size: int, seed: int, overrides: dict[str, Any] | None = None) -> Any:
    """The data bundle for a trial, loaded once per process, image size and data setting.

    The validation split depends on the data seed only (the space's ``seed``), never on a
    trial's training seed, so all trials are selected on the same images.
    """
    from coatsearch.data import load_data

    settings = space.data.model_copy(update=overrides or {})
    key = (settings.model_dump_json(), image_size, seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(
            settings.source,
            image_size=image_size,
            val_fraction=settings.val_fraction,
            train_size=settings.train_size,
            seed=seed,
            augment=settings.augment,
        )
    return _DATA_CACHE[key]


def measure_latency_ms(model: torch.nn.Module, image_size: int, in_channels: int, repeats: int = 5) -> float:
    """Median batch-1 inference latency on the model's device, in milliseconds."""
    device = next(model.parameters()).device
    x = torch.randn(1, in_channels, image_size, image_size, device=device)
    model.eval()
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def base_row(trial_number: int, space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trial": trial_number,
        "max_fidelity": space.epochs,
        "fidelity": 0,
        "node": socket.gethostname(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    row.update({f"param.{k}": v for k, v in params.items()})
    return row


def _describe(candidate: Candidate) -> dict[str, Any]:
    spec = candidate.spec
    return {
        "layout": spec.layout,
        "blocks": ",".join(str(s.blocks) for s in spec.stages),
        "channels": ",".join(str(s.channels) for s in spec.stages),
        "image_size": spec.image_size,
        "flops": candidate.flops,
        "params": candidate.n_params,
        "budget_note": candidate.budget_note,
        "spec": json.dumps(spec.to_dict(), separators=(",", ":")),
    }


def run_trial(
    space: SearchSpace,
    trial_number: int,
    params: dict[str, Any],
    report: Report | None = None,
    threads: int | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    """Build, train and measure one candidate; never raises for a bad candidate or run."""
    from coatsearch.train import TrainConfig, fit

    row = base_row(trial_number, space, params)
    if node:
        row["node"] = node
    start = time.perf_counter()
    try:
        candidate = make_candidate(space, params)
    except InfeasibleCandidate as exc:
        row.update(status="infeasible", reason=str(exc), wall_time=time.perf_counter() - start)
        return row
    row.update(_describe(candidate))
    settings = dict(candidate.train)
    if threads is not None:
        settings["threads"] = threads
    settings.setdefault("seed", space.seed)
    row["seed"] = settings["seed"]
    history: list[dict[str, Any]] = []

    def on_epoch(metrics: Any) -> bool:
        record = metrics.to_dict() if hasattr(metrics, "to_dict") else dict(vars(metrics))
        history.append(record)
        return bool(report(len(history), {**record, "flops": candidate.flops, "params": candidate.n_params})) if report else False

    try:
        config = TrainConfig(**settings)
        data = load_trial_data(space, candidate.spec.image_size, space.seed, candidate.data)
        result = fit(candidate.spec, config, data, callback=on_epoch)
    except Exception as exc:  # a broken trial is recorded; the study goes on
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0],
                   history=json.dumps(history), fidelity=len(history),
                   wall_time=time.perf_counter() - start)
        return row
    last = history[-1] if history else {}
    row.update(
        status=result.status,
        reason=getattr(result, "reason", None),
        fidelity=len(history),
        val_acc=last.get("val_acc"),
        val_loss=last.get("val_loss"),
        train_acc=last.get("train_acc"),
        train_loss=last.get("train_loss"),
        gap=last.get("gap"),
        images_per_s=last.get("images_per_s"),
        test_acc=getattr(result, "test_acc", None),
        history=json.dumps(history),
    )
    if any(o.metric == "latency_ms" for o in space.objectives) and result.status in ("complete", "stopped"):
        from coatsearch.nn import build

        row["latency_ms"] = measure_latency_ms(build(result.spec), result.spec.image_size, result.spec.in_channels)
    row["wall_time"] = time.perf_counter() - start
    return row


def objective_values(space: SearchSpace, row: dict[str, Any]) -> list[float]:
    """The row's values for the space's objectives, in order."""
    return [float(row[o.metric]) for o in space.objectives]
