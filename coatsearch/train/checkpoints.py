"""A training run's checkpoint folder (``coatsearch train -o DIR``): saved after every epoch,
resumed from after an interrupt.

``DIR/last.pt`` is written after every epoch with the trainer's state (optimiser,
schedule, generators, the batch stream's place), so a run started again with the same
settings continues where it stopped and ends with the weights and metrics the
uninterrupted run would have had (same device and thread count). ``DIR/best.pt`` holds the
weights of the epoch with the best validation accuracy so far. Both carry the spec and the
settings (`coatsearch.checkpoint`), so `convert`, `export` and ``--init-from`` read them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from coatsearch.checkpoint import Checkpoint, CheckpointError, load_weights, read_checkpoint, save_checkpoint
from coatsearch.errors import os_reason
from coatsearch.train.metrics import EpochMetrics, TrialResult

#: Settings that may differ between a run and its resumption: where and how fast it runs,
#: not what it trains (the test set is evaluated after training).
RUNTIME_ONLY = frozenset({"threads", "device", "loader_workers", "eval_test"})


def first_difference(saved: Any, wanted: Any, path: str = "") -> str | None:
    """The dotted path of the first field where two settings mappings differ, or None."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in [*saved, *(k for k in wanted if k not in saved)]:
            if key in RUNTIME_ONLY:
                continue
            where = f"{path}.{key}" if path else str(key)
            found = first_difference(saved.get(key), wanted.get(key), where)
            if found is not None:
                return found
        return None
    return None if saved == wanted else (path or "settings")


class Checkpoints:
    """The checkpoint folder of one training run (see the module docstring)."""

    def __init__(self, folder: str | Path, settings: dict[str, Any], training_file: str | None = None) -> None:
        """``training_file``: the YAML of the run, written as ``train.yaml`` once `restore`
        has found the folder empty or holding this run (never over another run's)."""
        self.folder = Path(folder)
        self.training_file = training_file
        if self.folder.exists() and not self.folder.is_dir():
            raise CheckpointError(f"-o {self.folder}: is a file, expected a folder for the checkpoints")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"-o {self.folder}: cannot create the folder ({os_reason(exc)})") from None
        self.settings = settings
        self.best_acc = float("-inf")
        self.best_epoch: int | None = None

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def restore(self, trainer: Any, model: nn.Module, result: TrialResult, log: Callable[[str], None]) -> int:
        """Load ``last.pt`` into the model, trainer and result when there is one; the epoch
        to train next (1 without one). A checkpoint of another network or other settings
        is refused, naming the first field that differs."""
        if not self.last.exists():
            self._write_training_file()
            return 1
        saved = read_checkpoint(self.last)
        if saved.trainer is None:
            raise CheckpointError(f"{self.last}: holds no trainer state to resume from")
        if saved.spec != result.spec:
            field = first_difference(saved.spec.to_dict(), result.spec.to_dict()) or "spec"
            raise CheckpointError(f"{self.last}: a run of another network (spec field {field} differs); "
                                  "use another -o folder or remove it")
        differs = first_difference(saved.settings, self.settings)
        if differs is not None:
            raise CheckpointError(f"{self.last}: a run with other settings ({differs} differs); "
                                  "use another -o folder or remove it")
        load_weights(model, saved.state_dict, str(self.last))
        trainer.load_state_dict(saved.trainer)
        self._write_training_file()
        result.epochs = [EpochMetrics(**e) for e in saved.epochs]
        self.best_epoch = saved.best_epoch
        if saved.best_epoch is not None:
            self.best_acc = result.epochs[saved.best_epoch - 1].val_acc
        log(f"resuming {self.folder}: {saved.epoch} of {trainer.config.epochs} epochs done")
        return saved.epoch + 1

    def _write_training_file(self) -> None:
        if self.training_file is None:
            return
        path = self.folder / "train.yaml"
        try:
            path.write_text(self.training_file)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot write ({os_reason(exc)})") from None

    def save(self, trainer: Any, model: nn.Module, result: TrialResult) -> None:
        """``last.pt`` after an epoch; ``best.pt`` too when its validation accuracy is the best."""
        metrics = result.epochs[-1]
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        improved = metrics.val_acc > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = metrics.val_acc, metrics.epoch
        checkpoint = Checkpoint(
            spec=result.spec, state_dict=state, settings=self.settings, epoch=metrics.epoch,
            epochs=[e.to_dict() for e in result.epochs], best_epoch=self.best_epoch,
        )
        if improved:
            save_checkpoint(checkpoint, self.best)
        checkpoint.trainer = trainer.state_dict()
        save_checkpoint(checkpoint, self.last)
