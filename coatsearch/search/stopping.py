"""The checks an ``early_stopping`` section gets when a space is compiled, so that a
scheduler that cannot run here is refused in one line before any trial: its rungs must
fit the epochs, its backend must run it, and its objectives must be known at each rung."""

from __future__ import annotations

import math
from typing import Any

from coatsearch.search.registries import SCHEDULERS
from coatsearch.space import SearchSpace, SpaceError

#: The built-in schedulers that decide at successive-halving rungs.
RUNG_KINDS = ("asha", "hyperband", "moasha")
#: Objectives a trial has from its first epoch on (the candidate's counts); every other
#: objective is read per epoch from the history, except ``latency_ms``, measured after training.
STATIC_OBJECTIVES = ("flops", "params")
#: Metrics every epoch records.
PER_EPOCH = ("val_acc", "val_loss", "train_eval_acc", "train_acc_running", "train_loss_running")
#: Per-epoch records besides the metric that learning-curve prediction reads (log scale):
#: how fast a network fits its training data, and its validation loss.
SIGNALS = ("train_loss_running", "val_loss")


def bracket_count(grace: int, factor: int, max_epochs: int) -> int:
    """Brackets of a Hyperband from ``grace`` to ``max_epochs`` epochs: one more than the
    rungs of the most aggressive bracket (the last one never stops a trial)."""
    return max(1, math.floor(math.log(max_epochs / grace, factor) + 1e-9) + 1)


def check_early_stopping(space: SearchSpace, epochs: int) -> None:
    """Raise `coatsearch.space.SpaceError` (one line) for a scheduler this space cannot run."""
    early = space.early_stopping
    kind = early.kind
    if kind == "none":
        return
    if kind not in SCHEDULERS:
        raise SpaceError(f"early_stopping.kind: unknown {SCHEDULERS.kind} {kind!r}; expected none or {SCHEDULERS.expected()}")
    if kind in (*RUNG_KINDS, "curve", "target") and early.grace_period >= epochs:
        raise SpaceError(f"early_stopping.grace_period: {early.grace_period} leaves no epoch to stop at before "
                         f"train.epochs {epochs}; lower it or train longer")
    if kind == "hyperband" and early.brackets is not None:
        most = bracket_count(early.grace_period, early.reduction_factor, epochs)
        if early.brackets > most:
            raise SpaceError(f"early_stopping.brackets: {early.brackets}, but {epochs} epochs from grace_period "
                             f"{early.grace_period} at reduction_factor {early.reduction_factor} allow {most}")
    metrics = [o.metric for o in space.objectives]
    if kind == "moasha" and len(metrics) < 2:
        raise SpaceError(f"early_stopping.kind: moasha ranks several objectives, this space has one ({metrics[0]}); "
                         "use asha or hyperband")
    unknown = [m for m in metrics if m not in STATIC_OBJECTIVES and m not in PER_EPOCH]
    if kind in ("moasha", "curve") and len(metrics) > 1 and unknown:
        raise SpaceError(f"early_stopping.kind: {kind} compares objectives while trials train, and {unknown[0]} is "
                         "measured only after training; use flops or params, or asha/hyperband")



def rung_ladder(grace: int, factor: int, max_epochs: int) -> list[int]:
    """The epochs ``grace * factor**k`` below ``max_epochs``: where successive halving decides."""
    rungs, rung = [], grace
    while rung < max_epochs:
        rungs.append(rung)
        rung *= factor
    return rungs


def _halving_fraction(rungs: list[int], factor: int, epochs: int) -> float:
    """Epochs trained per trial, as a fraction of ``epochs``, when each rung keeps ``1/factor``."""
    if not rungs:
        return 1.0
    trained, kept = float(rungs[0]), 1.0
    for start, end in zip(rungs, [*rungs[1:], epochs]):
        kept /= factor
        trained += (end - start) * kept
    return trained / epochs


def expected_fraction(early: Any, epochs: int) -> tuple[float, str] | None:
    """The share of a full run's training a scheduler is expected to spend, and how that
    was reckoned; None without early stopping. Successive halving keeps ``1/rf`` at each
    rung once enough trials have reached it (the first trials pass unjudged, so a short
    run spends more); Hyperband averages its brackets by the trials each gets; the curve
    scheduler depends on the curves, so only its bounds are known."""
    kind = early.kind
    factor, grace = early.reduction_factor, early.grace_period
    if kind in ("asha", "moasha"):
        fraction = _halving_fraction(rung_ladder(grace, factor, epochs), factor, epochs)
        return fraction, f"{kind} keeps 1/{factor} at each rung once enough trials have reached it"
    if kind == "hyperband":
        count = min(early.brackets or bracket_count(grace, factor, epochs), bracket_count(grace, factor, epochs))
        shares = [math.ceil(count * factor ** (count - 1 - b) / (count - b)) for b in range(count)]
        parts = [_halving_fraction(rung_ladder(grace * factor**b, factor, epochs), factor, epochs) for b in range(count)]
        fraction = sum(s * p for s, p in zip(shares, parts)) / sum(shares)
        return fraction, f"hyperband's {count} brackets, each keeping 1/{factor} at its rungs, weighted by their trials"
    if kind == "curve":
        return 1.0, (f"curve stops a trial from epoch {grace} on only when its prediction says so: between "
                     f"{grace / epochs:.0%} and all of the full run, depending on the curves")
    if kind == "target":
        return 1.0, (f"target stops a trial once its {early.metric} reaches {early.target:g}: between "
                     f"{min(grace, epochs) / epochs:.0%} and all of the full run, depending on how fast each gets there")
    return None
