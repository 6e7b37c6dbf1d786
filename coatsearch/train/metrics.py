"""What a trial reports: one `EpochMetrics` per epoch and a `TrialResult` at the end."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from coatsearch.spec import NetSpec
from coatsearch.status import Status


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's numbers. Accuracies are fractions in [0, 1].

    ``train_eval_loss``/``train_eval_acc`` are measured after the epoch like ``val_*``: the
    final weights in eval mode, plain cross entropy, on a fixed stratified subset of the
    training images the size of the validation set (the same subset in every trial on the
    same data), so ``gap = train_eval_acc - val_acc`` is the paper's generalization gap.
    ``train_loss_running``/``train_acc_running`` are running means over the epoch's batches
    in training mode (augmentation, mixup, label smoothing, dropout on, weights moving):
    the objective actually minimised, not a measure of fit. ``images_per_s`` counts the
    training phase only; ``wall_time`` is seconds since the trial started; ``lr`` is the
    learning rate of the epoch's last step.

    ``epoch_s`` is the epoch's own wall time (training and both evaluations) and
    ``epoch_cpu_s`` the CPU time this process spent in it, over all its threads. On a
    machine shared with other work the wall time grows with the load while the CPU time
    stays near what the epoch costs alone, so a simulated clock (`coatsearch.search.replay`)
    advances by ``epoch_cpu_s``; per thread-count it is comparable only among trials run
    with the same ``threads``.
    """

    epoch: int
    train_loss_running: float
    train_acc_running: float
    train_eval_loss: float
    train_eval_acc: float
    val_loss: float
    val_acc: float
    gap: float
    images_per_s: float
    wall_time: float
    lr: float
    epoch_s: float | None = None
    epoch_cpu_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value: Any) -> Any:
    """Non-finite floats become None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class TrialResult:
    """The outcome of `coatsearch.fit`.

    ``status``: ``complete`` (all epochs), ``stopped`` (the callback asked to stop),
    ``diverged`` (a non-finite loss; ``reason`` says where) or ``failed`` (the run raised
    a runtime error such as running out of memory; ``reason`` has the message).
    ``spec`` is the spec actually trained, after adapting it to the data.
    ``val_correct``/``test_correct``: which images of each set the final network got right,
    in the set's order (the last epoch's validation, the test after training).
    """

    status: Status
    spec: NetSpec
    params: int
    epochs: list[EpochMetrics] = field(default_factory=list)
    test_acc: float | None = None
    test_loss: float | None = None
    wall_time: float = 0.0
    reason: str | None = None
    val_correct: np.ndarray | None = field(default=None, repr=False)
    test_correct: np.ndarray | None = field(default=None, repr=False)

    @property
    def final(self) -> EpochMetrics | None:
        """The last finished epoch's metrics."""
        return self.epochs[-1] if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: status, the final epoch's metrics, test metrics, every epoch."""
        final = self.final
        return {
            "status": self.status,
            "reason": self.reason,
            "epochs_run": len(self.epochs),
            "params": self.params,
            "wall_time": round(self.wall_time, 3),
            "test_acc": _json_number(self.test_acc),
            "test_loss": _json_number(self.test_loss),
            "final": final.to_dict() if final else None,
            "epochs": [e.to_dict() for e in self.epochs],
            "spec": self.spec.to_dict(),
        }
