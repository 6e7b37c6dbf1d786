"""How long a plan's trials will take on this machine, from a few timed steps.

For each distinct network of a dry run, a few training steps on random data of the trial's
batch size and threads are timed (after one warm-up step), and a trial's time is
``steps per epoch x epochs x step time`` plus evaluation at the measured forward speed.
The run's time is the trials' sum over the space's concurrency. It is an estimate: it
leaves out data reading, the first step's start-up and other processes sharing the
machine, so it is labelled rough (about ±30%).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from coatsearch.nn import build
from coatsearch.search.plan import SearchPlan
from coatsearch.search.stopping import expected_fraction
from coatsearch.spec import NetSpec

#: Training steps timed per network (after one warm-up step).
TIMED_STEPS = 3


@dataclass(frozen=True)
class StepTime:
    train_s: float  # one training step (forward, backward, optimiser) of a batch
    forward_s: float  # one evaluation forward of a batch


def time_steps(spec: NetSpec, batch_size: int, threads: int, in_channels: int, num_classes: int,
               steps: int = TIMED_STEPS) -> StepTime:
    """Median-free, plain mean of ``steps`` steps: enough for a rough estimate."""
    spec = spec.replace(in_channels=in_channels, num_classes=num_classes)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build(spec).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch_size, in_channels, spec.image_size, spec.image_size).to(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (batch_size,))
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        train_s = (time.perf_counter() - start) / steps
        model.eval()
        with torch.inference_mode():
            model(x)
            start = time.perf_counter()
            model(x)
            forward_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return StepTime(train_s, forward_s)


@dataclass(frozen=True)
class Estimate:
    """Seconds per trial and for the run at full fidelity, how they were reckoned, and the
    run's seconds under its early-stopping scheduler with how that was reckoned (None
    without one; `coatsearch.search.stopping.expected_fraction`)."""

    per_trial_s: tuple[float, ...]
    run_s: float
    basis: str
    scheduled_s: float | None = None
    scheduled_basis: str | None = None


def estimate(plan: SearchPlan, specs: list[NetSpec | None], train_images: int | Sequence[int], val_images: int,
             in_channels: int, num_classes: int, steps: int = TIMED_STEPS) -> Estimate:
    """Seconds per candidate (0 for an infeasible one) and for the whole run.

    ``train_images``: one size for every candidate, or each candidate's own (a searched
    ``data.train_size``). With ``train.steps`` the steps are that, whatever the size. Every
    epoch evaluates the validation set and the training subset of its size. ``steps``: training
    steps timed per network (a run's own ETA times one, to start sooner)."""
    config = plan.train
    threads = plan.space.trial_threads
    sizes = [train_images] * len(specs) if isinstance(train_images, int) else list(train_images)
    cache: dict[NetSpec, StepTime] = {}
    per_trial = []
    for spec, size in zip(specs, sizes):
        if spec is None:
            per_trial.append(0.0)
            continue
        if spec not in cache:
            cache[spec] = time_steps(spec, config.batch_size, threads, in_channels, num_classes, steps)
        step = cache[spec]
        trained = config.steps or math.ceil(size / config.batch_size) * config.epochs
        evaluated = val_images + min(val_images, size)
        evals = math.ceil(evaluated / (2 * config.batch_size)) * config.epochs * 2  # eval batches are twice as big
        per_trial.append(trained * step.train_s + evals * step.forward_s)
    run = sum(per_trial) / max(1, min(plan.space.concurrency, len([s for s in specs if s is not None]) or 1))
    plural = "s" if steps > 1 else ""
    basis = (f"rough (about ±30%): {steps} timed training step{plural} of each of {len(cache)} networks at batch "
             f"{config.batch_size} on {threads} thread(s) of this machine; data reading and start-up not included")
    scheduled = expected_fraction(plan.space.early_stopping, config.epochs)
    if scheduled is None:
        return Estimate(tuple(per_trial), run, basis)
    fraction, reckoned = scheduled
    return Estimate(tuple(per_trial), run, basis, run * fraction, f"{fraction:.0%} of the epochs: {reckoned}")


def estimate_candidates(plan: SearchPlan, candidates: Sequence[Any], steps: int = TIMED_STEPS) -> Estimate | None:
    """A dry run's wall-time estimate, or None when the data cannot be sized here (a
    cluster's path): each candidate (`Preview`) timed at its own training-set size."""
    from coatsearch.errors import CoatsearchError
    from coatsearch.search.inputs import load_trial_data

    try:
        data = load_trial_data(plan.space.data, plan.base.image_size, plan.space.seed)
    except CoatsearchError:
        return None
    # a searched train_size sets each candidate's own; a larger one than the data has is
    # refused when the trial loads its data
    sizes = [min(int(c.sampled.get("data.train_size") or len(data.train)), len(data.train)) for c in candidates]
    return estimate(plan, [c.spec for c in candidates], sizes, len(data.val), data.in_channels, data.num_classes, steps)
