"""Every trial in MLflow, where the space asks for it (``tracking: {mlflow: URI}``): each
trial, as it ends, is one MLflow run named ``trial-NNNN`` in an experiment named after the
study. Its params are the sampled values and the network under the results table's column
names (``param.split``, ``layout``, ``blocks``, ``channels``, ``flops``, ``params``,
``seed``); its metrics every epoch of its history at step = epoch (``val_acc``,
``val_loss``, ``train_loss_running``, ...), its final objectives (``final/val_acc``, ...),
and ``fidelity`` (epochs trained); its tags the trial's status, reason, backend and run
directory, so runs of one study in two directories can be told apart.

The runner logs them from each trial's row in the driver, as it writes TensorBoard's files
(`coatsearch.search.tracking`), so every backend logs the same runs whatever process
trained the trial; a replay logs its trials too (tagged ``backend: replay``), so replayed
searches compare in MLflow. MLflow is an optional install (``coatsearch[mlflow]``, the
``mlflow-skinny`` client); `check_mlflow` refuses a space that asks for it without it,
before any trial.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from coatsearch.search.rows import TrialRow
from coatsearch.search.tracking import epoch_scalars
from coatsearch.search.tracking import number as scalar
from coatsearch.space import SearchSpace, SpaceError
from coatsearch.status import Status
from coatsearch.trackers import MLFLOW_EXTRA, local_path

#: The row's fields logged as params, beside its sampled values: the network and seed.
NETWORK = ("layout", "blocks", "channels", "image_size", "flops", "params", "seed")

#: MLflow's end state of a trial that finished as it says.
_END = {Status.COMPLETE: "FINISHED", Status.STOPPED: "FINISHED", Status.DIVERGED: "FAILED", Status.FAILED: "FAILED"}


#: A plain path with one of these suffixes is a SQLite file; any other, a folder.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def check_mlflow(space: SearchSpace) -> None:
    """`SpaceError` when the space logs to MLflow and its client is not installed, or names
    a folder store, which MLflow 3 refuses unless told to allow it."""
    if space.tracking is None or space.tracking.mlflow is None:
        return
    try:
        found = importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # a module entry without a spec: not importable either
        found = False
    if not found:
        raise SpaceError(f"tracking.mlflow: logging trials to MLflow needs its client; {MLFLOW_EXTRA}")
    uri = store_uri(space.tracking.mlflow)
    if uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        raise SpaceError(f"tracking.mlflow: {space.tracking.mlflow} is a folder, which MLflow 3 no longer keeps runs "
                         "in; expected a SQLite file (sqlite:///PATH.db or a path ending in .db), or set "
                         "MLFLOW_ALLOW_FILE_STORE=true")


def store_uri(uri: str) -> str:
    """The tracking URI as MLflow takes it: a plain path ending in ``.db`` is that SQLite
    file, any other plain path MLflow's folder store (a ``file:`` URI)."""
    path = local_path(uri)
    if path != uri:
        return uri
    if Path(path).suffix.lower() in SQLITE_SUFFIXES:
        return f"sqlite:///{os.path.abspath(path)}"
    return Path(os.path.abspath(path)).as_uri()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's info lines (creating a database's tables) and warnings kept off the
    terminal while it logs: the run says what it does in its own lines."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class MlflowLog:
    """The study's MLflow experiment (created on the first trial logged) and the client
    that logs each trial into it."""

    def __init__(self, uri: str, study: str, run_dir: Path, backend: str) -> None:
        from mlflow.tracking import MlflowClient  # before `_quiet`: importing MLflow sets its loggers' levels

        with _quiet():
            self.client = MlflowClient(tracking_uri=store_uri(uri))  # a new SQLite file gets its tables here
        self.study, self.run_dir, self.backend = study, run_dir, backend
        #: artifacts (none logged here) beside a local store, not in the working directory
        local = local_path(store_uri(uri)) if store_uri(uri).startswith("sqlite:") else None
        self.artifacts = None if not local else Path(os.path.abspath(local)).parent.joinpath("mlartifacts").as_uri()
        self._experiment: str | None = None

    def experiment_id(self) -> str:
        """The study's experiment, created if no process has yet."""
        if self._experiment is None:
            found = self.client.get_experiment_by_name(self.study)
            if found is None:
                try:
                    self._experiment = self.client.create_experiment(self.study, artifact_location=self.artifacts)
                except Exception:  # another process created it first
                    found = self.client.get_experiment_by_name(self.study)
                    if found is None:
                        raise
            if found is not None:
                self._experiment = found.experiment_id
        assert self._experiment is not None
        return self._experiment

    def log(self, row: TrialRow, metrics: Sequence[str]) -> str | None:
        """The trial as one MLflow run (its id); None for a row that has not finished."""
        if not row.finished:
            return None
        with _quiet():
            return self._log(row, metrics)

    def _log(self, row: TrialRow, metrics: Sequence[str]) -> str:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = {**{f"param.{k}": v for k, v in row.sampled.items()},
                  **{k: getattr(row, k) for k in NETWORK if getattr(row, k) is not None}}
        tags = {"status": str(row.status), "trial": str(row.trial), "backend": self.backend,
                "run_dir": str(self.run_dir.absolute()), **({"reason": row.reason} if row.reason else {})}
        values = [Metric(name, value, now, epoch) for _, epoch, name, value in epoch_scalars(row) if epoch is not None]
        finals: dict[str, Any] = {f"final/{m}": row.objective(m) for m in metrics}
        finals["fidelity"] = row.fidelity
        values += [Metric(name, number, now, row.fidelity) for name, value in finals.items()
                   if (number := scalar(value)) is not None]
        run = self.client.create_run(self.experiment_id(), run_name=f"trial-{row.trial:04d}",
                                     tags={"mlflow.runName": f"trial-{row.trial:04d}"})
        run_id = run.info.run_id
        try:
            for start in range(0, max(len(values), 1), 1000):  # MLflow takes 1,000 metrics a batch
                self.client.log_batch(run_id, metrics=values[start:start + 1000],
                                      params=[Param(k, str(v)) for k, v in params.items()] if start == 0 else [],
                                      tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [])
        except Exception:
            with contextlib.suppress(Exception):  # the store that refused the batch may refuse this too
                self.client.set_terminated(run_id, "FAILED", now)
            raise
        self.client.set_terminated(run_id, _END.get(row.status, "FINISHED"), now)
        return run_id
