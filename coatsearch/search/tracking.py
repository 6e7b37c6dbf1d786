"""Every trial in TensorBoard: ``RUN_DIR/tensorboard/trial-NNNN/`` holds one event file per
trial with its per-epoch metrics (``val_acc``, ``train_loss_running``, ``lr``, ... at step =
epoch) and its hyperparameters (the sampled values and the network: layout, blocks,
channels, FLOPs, parameters) with its final metrics, for TensorBoard's HParams tab.

The runner writes them from each trial's row as the trial ends, in the driver, so the
optuna and ray backends write the same files whatever process trained the trial
(``tensorboard --logdir RUN_DIR/tensorboard``). The summaries are tensorboardX's (installed
with Ray Tune); the file is written here, at once and synchronously, rather than by its
`SummaryWriter`, whose background thread and exit hook print tracebacks when a write
fails (a full disk) after the run has already said so in one line. Reading the files
needs nothing of coatsearch.
"""

from __future__ import annotations

import math
import shutil
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from coatsearch.search.rows import TrialRow
from coatsearch.status import Status

#: The run directory's folder of event files, one sub-folder per trial.
FOLDER = "tensorboard"

#: Rows that trained something to show.
TRAINED = (Status.COMPLETE, Status.STOPPED, Status.DIVERGED, Status.FAILED)


def trial_folder(run_dir: Path, trial: int) -> Path:
    return run_dir / FOLDER / f"trial-{trial:04d}"


def number(value: Any) -> float | None:
    """A value a tracker plots: a finite int or float (not a bool); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_scalars(row: TrialRow) -> Iterator[tuple[int, int | None, str, float]]:
    """Every number of every epoch in the trial's history: (its position from 1, the epoch
    it records, the metric's name, the value). The trackers share one reading of a row."""
    for position, epoch in enumerate(row.history or (), start=1):
        for name, value in epoch.model_dump().items():
            if name != "epoch" and (scalar := number(value)) is not None:
                yield position, epoch.epoch, name, scalar


def _hparam(value: Any) -> Any:
    """A value TensorBoard's HParams take: a number, a string or a bool."""
    return value if isinstance(value, bool | int | float | str) else str(value)


def _record(data: bytes) -> bytes:
    """One record of an event file (TFRecord framing: length, its CRC, data, its CRC)."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("Q", len(data))
    return header + struct.pack("I", masked_crc32c(header)) + data + struct.pack("I", masked_crc32c(data))


def write_trial_events(run_dir: Path, row: TrialRow, metrics: Sequence[str]) -> Path | None:
    """The trial's event file, written afresh (None for a row with nothing trained)."""
    if row.status not in TRAINED:
        return None
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import hparams, scalar

    folder = trial_folder(run_dir, row.trial)
    shutil.rmtree(folder, ignore_errors=True)  # a row written again replaces its file
    hp = {**{f"param.{k}": _hparam(v) for k, v in row.sampled.items()},
          **{k: _hparam(getattr(row, k)) for k in ("layout", "blocks", "channels", "flops", "params", "seed")
             if getattr(row, k) is not None}, "status": str(row.status)}
    final = {f"final/{m}": v for m in metrics if (v := number(row.objective(m))) is not None}
    events = [Event(wall_time=time.time(), file_version="brain.Event:2")]
    events += [Event(wall_time=time.time(), step=step, summary=scalar(name, value))
               for step, _, name, value in epoch_scalars(row)]
    events += [Event(wall_time=time.time(), summary=part) for part in hparams(hp, final)]
    events += [Event(wall_time=time.time(), step=row.fidelity, summary=scalar(name, value))
               for name, value in final.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    path.write_bytes(b"".join(_record(event.SerializeToString()) for event in events))
    return folder
