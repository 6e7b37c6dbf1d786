"""One trial, the same for every backend: sampled parameters in, one `TrialRow` out.

The backends only decide *which* parameters to try and *where*; they hand each trial to
`run_trial` with a `report` callback (called after every epoch; returning True stops the
trial early) and store the row it returns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from coatsearch import perimage
from coatsearch.search.inputs import load_trial_data
from coatsearch.search.plan import Candidate, InfeasibleCandidate, SearchPlan
from coatsearch.search.rows import Epoch, TrialRow
from coatsearch.status import Status

#: (epoch, metrics) -> stop?
Report = Callable[[int, dict[str, Any]], bool]

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


def _per_image(correct: Any, images: Any) -> str | None:
    """A set's per-image correctness as its results cell (`coatsearch.perimage`)."""
    if correct is None or len(correct) != len(images):
        return None
    return perimage.encode(correct, images.labels.cpu().numpy())


def _described(row: TrialRow, candidate: Candidate) -> TrialRow:
    return row.described(candidate.net).replace(budget_note=candidate.budget_note, spec=candidate.spec.to_dict())


def run_trial(
    plan: SearchPlan,
    trial_number: int,
    sampled: dict[str, Any],
    report: Report | None = None,
    threads: int | None = None,
    node: str | None = None,
) -> TrialRow:
    """Build, train and measure one candidate; never raises for a bad candidate or run."""
    from coatsearch.train import fit

    space = plan.space
    row = TrialRow.begin(trial_number, sampled, plan.epochs, node=node)
    start = time.perf_counter()
    phases: dict[str, float] = {}
    try:
        candidate = plan.candidate(sampled)
    except InfeasibleCandidate as exc:
        return row.replace(status=Status.INFEASIBLE, reason=str(exc), wall_time=time.perf_counter() - start)
    row = _described(row, candidate)
    phases["build"] = time.perf_counter() - start
    # the machine decides the threads; everything else was validated with the candidate
    config = candidate.train if threads is None else candidate.train.model_copy(update={"threads": threads})
    row = row.replace(seed=config.seed)
    history: list[Epoch] = []

    def on_epoch(metrics: Any) -> bool:
        epoch = metrics.to_dict()
        history.append(Epoch.model_validate(epoch))
        if report is None:
            return False
        return bool(report(len(history), {**epoch, "flops": candidate.net.flops, "params": candidate.net.params}))

    try:
        mark = time.perf_counter()
        data = load_trial_data(candidate.data, candidate.spec.image_size, space.seed, config.seed)
        row = row.replace(train_images=len(data.train), val_images=len(data.val),
                          test_images=len(data.test) if config.eval_test else None)
        phases["data"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = fit(candidate.spec, config, data, callback=on_epoch)
        fitting = time.perf_counter() - mark
    except Exception as exc:  # a broken trial is recorded; the study goes on
        return row.replace(status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}".splitlines()[0],
                           history=tuple(history), fidelity=len(history),
                           wall_time=time.perf_counter() - start)
    row = row.at_epoch(history[-1] if history else None).replace(
        status=result.status, reason=result.reason, fidelity=len(history),
        test_acc=result.test_acc, history=tuple(history),
        val_correct=_per_image(result.val_correct, data.val),
        test_correct=_per_image(result.test_correct, data.test),
    )
    # training time from each epoch's throughput; the rest of fit is evaluation and setup
    phases["train"] = sum(len(data.train) / h.images_per_s for h in history if h.images_per_s)
    phases["evaluate"] = max(0.0, fitting - phases["train"])
    if "latency_ms" in plan.metrics and result.status in (Status.COMPLETE, Status.STOPPED):
        from coatsearch.nn import build

        if plan.space.latency_profile and not plan.space.latency_measure:  # predicted: no timing beside other trials
            from coatsearch.latency import predict
            from coatsearch.latency.profile import load_checked

            batch = plan.space.budget.batch if plan.space.budget is not None else 1
            row = row.replace(latency_ms=predict(result.spec, batch, load_checked(plan.space.latency_profile)))
        else:
            row = row.replace(latency_ms=measure_latency_ms(build(result.spec), result.spec.image_size,
                                                            result.spec.in_channels))
    return row.replace(wall_time=time.perf_counter() - start,
                       phases={k: round(v, 3) for k, v in phases.items()})
