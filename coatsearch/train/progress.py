"""A rich progress display for `fit`: batches within the epoch, and epochs overall.

`TrainProgress` supplies `fit`'s ``on_batch`` hook and epoch ``callback``, and prints
one line per finished epoch above the bars. It writes to the console it is given
(stderr in the CLI, so that ``--json`` keeps stdout clean).
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from coatsearch.train.metrics import EpochMetrics


def format_epoch(m: EpochMetrics) -> str:
    return (
        f"epoch {m.epoch}: train loss {m.train_loss_running:.4f} (running)  "
        f"train acc {m.train_eval_acc:.2%}  val loss {m.val_loss:.4f} acc {m.val_acc:.2%}  gap {m.gap:+.2%}  "
        f"{m.images_per_s:.0f} img/s  lr {m.lr:.2e}  {m.wall_time:.0f}s"
    )


class TrainProgress:
    """Context manager: ``with TrainProgress(console, epochs) as p: fit(..., callback=p.epoch_done, on_batch=p.batch_done)``."""

    def __init__(self, console: Console, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.epochs: TaskID = self.progress.add_task("epochs ", total=epochs)
        self.batches: TaskID = self.progress.add_task("batches", total=None)

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def batch_done(self, epoch: int, batch: int, batches: int) -> None:
        if batch == 1:
            self.progress.reset(self.batches, total=batches, description=f"epoch {epoch}")
        self.progress.update(self.batches, completed=batch)

    def epoch_done(self, metrics: EpochMetrics) -> bool:
        self.progress.console.print(format_epoch(metrics), highlight=False, soft_wrap=True)
        self.progress.update(self.epochs, completed=metrics.epoch)
        return False

    def log(self, message: str) -> None:
        self.progress.console.print(message, style="dim", highlight=False, soft_wrap=True)
