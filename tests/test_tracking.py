"""Every trial's TensorBoard events, read back with TensorBoard's own event reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from coatsearch.search.rows import Epoch, TrialRow
from coatsearch.search.tracking import trial_folder, write_trial_events
from coatsearch.status import Status


def read_events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, object]]:
    """A trial folder's scalars (tag -> [(step, value)]) and hyperparameters, as TensorBoard reads them."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    return scalars, hparams


def test_a_trials_events_hold_its_epochs_and_hyperparameters(tmp_path):
    history = tuple(Epoch(epoch=i, val_acc=acc, train_loss_running=loss, lr=1e-3)
                    for i, (acc, loss) in enumerate([(0.25, 2.0), (0.5, float("nan"))], start=1))
    row = TrialRow(trial=7, status=Status.COMPLETE, sampled={"split": 3, "train.lr": 0.002}, fidelity=2,
                   max_fidelity=2, layout="C-C-T-T", blocks="1,3,3,1", channels="8,16,32,32", flops=1_200_000,
                   params=50_000, val_acc=0.5, history=history)
    folder = write_trial_events(tmp_path, row, ["val_acc", "flops"])
    assert folder == trial_folder(tmp_path, 7) == tmp_path / "tensorboard" / "trial-0007"
    scalars, hparams = read_events(folder)
    assert scalars["val_acc"] == [(1, 0.25), (2, 0.5)]
    assert scalars["train_loss_running"] == [(1, 2.0)]  # a non-finite value is left out
    assert scalars["final/val_acc"] == [(2, 0.5)] and scalars["final/flops"] == [(2, 1_200_000)]
    assert hparams["param.split"] == 3 and hparams["param.train.lr"] == pytest.approx(0.002)
    assert hparams["layout"] == "C-C-T-T" and hparams["flops"] == 1_200_000 and hparams["status"] == "complete"
    # written again (a row rewritten), the folder holds one file, not two
    write_trial_events(tmp_path, row, ["val_acc"])
    assert len(list(folder.iterdir())) == 1


def test_a_row_with_nothing_trained_writes_nothing(tmp_path):
    row = TrialRow(trial=1, status=Status.INFEASIBLE, sampled={"split": 9}, reason="no network")
    assert write_trial_events(tmp_path, row, ["val_acc"]) is None
    assert not (tmp_path / "tensorboard").exists()
