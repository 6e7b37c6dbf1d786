"""Checkpoints: last and best saved every epoch, a resumed run equal to an uninterrupted one,
settings and networks that do not match refused in one line, weights loaded or refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coatsearch.checkpoint import CheckpointError, load_weights, read_checkpoint
from coatsearch.data import DataBundle, load_data
from coatsearch.nn import build
from coatsearch.train import TrainConfig, fit
from coatsearch.train.checkpoints import Checkpoints, first_difference
from tests.conftest import tiny_spec

SETTINGS = {"train": {"epochs": 3, "seed": 1}, "data": {"source": "fashion-mnist"}}


@pytest.fixture(scope="module")
def data() -> DataBundle:
    # mixup and light augmentation: resuming must restore every generator they draw from
    return load_data("fashion-mnist", image_size=16, train_size=200, val_fraction=0.1, augment="light")


def _config() -> TrainConfig:
    return TrainConfig(epochs=3, steps=9, batch_size=32, threads=1, seed=1, mixup=0.2)


class _Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def callback(metrics) -> None:
        if metrics.epoch == epoch:
            raise _Interrupt

    return callback


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path: Path, data: DataBundle) -> None:
    spec = tiny_spec(image_size=16).map_stages("T", head_dim=16)
    straight = fit(spec, _config(), data, checkpoints=Checkpoints(tmp_path / "a", SETTINGS))
    with pytest.raises(_Interrupt):
        fit(spec, _config(), data, callback=_stop_after(1), checkpoints=Checkpoints(tmp_path / "b", SETTINGS))
    assert read_checkpoint(tmp_path / "b" / "last.pt").epoch == 1
    notes: list[str] = []
    resumed = fit(spec, _config(), data, checkpoints=Checkpoints(tmp_path / "b", SETTINGS), log=notes.append)
    assert any("1 of 3 epochs done" in n for n in notes)
    assert [m.epoch for m in resumed.epochs] == [1, 2, 3]
    # 9 steps in rounds of 3: the batch stream's place mid-pass and every generator resume
    for a, b in zip(straight.epochs, resumed.epochs):
        assert (a.train_loss_running, a.val_acc, a.val_loss) == (b.train_loss_running, b.val_acc, b.val_loss)
    last_a, last_b = (read_checkpoint(tmp_path / d / "last.pt") for d in ("a", "b"))
    assert all(torch.equal(last_a.state_dict[k], last_b.state_dict[k]) for k in last_a.state_dict)
    # best.pt: the weights of the best validation epoch, spec and settings inside
    best = read_checkpoint(tmp_path / "a" / "best.pt")
    accs = [m.val_acc for m in straight.epochs]
    assert best.epoch == accs.index(max(accs)) + 1 and best.trainer is None
    assert best.spec == straight.spec and best.settings == SETTINGS


def test_a_checkpoint_of_other_settings_or_another_network_is_refused(tmp_path: Path, data: DataBundle) -> None:
    spec = tiny_spec(image_size=16).map_stages("T", head_dim=16)
    fit(spec, TrainConfig(epochs=1, batch_size=64, threads=1), data, checkpoints=Checkpoints(tmp_path, SETTINGS))
    other = {"train": {"epochs": 3, "seed": 2}, "data": SETTINGS["data"]}
    (tmp_path / "train.yaml").write_text("the first run's\n")
    with pytest.raises(CheckpointError, match=r"other settings \(train.seed differs\)"):
        fit(spec, TrainConfig(epochs=1, batch_size=64), data, checkpoints=Checkpoints(tmp_path, other, "another run's\n"))
    assert (tmp_path / "train.yaml").read_text() == "the first run's\n"  # nothing of the first run lost
    wider = spec.with_field("stages[0].channels", 48)
    with pytest.raises(CheckpointError, match=r"another network \(spec field stages differs\)"):
        fit(wider, TrainConfig(epochs=1, batch_size=64), data, checkpoints=Checkpoints(tmp_path, SETTINGS))
    with pytest.raises(CheckpointError, match="is a file, expected a folder"):
        Checkpoints(tmp_path / "last.pt", SETTINGS)


def test_first_difference_names_the_field() -> None:
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c"
    assert first_difference({"a": 1, "threads": 2}, {"a": 1, "threads": 4}) is None
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == "b"


def test_weights_that_do_not_fit_are_refused_naming_the_key_or_shape(tmp_path: Path) -> None:
    model = build(tiny_spec())
    state = model.state_dict()
    first = next(iter(state))
    with pytest.raises(CheckpointError, match=f"missing key '{first}'"):
        load_weights(model, {k: v for k, v in state.items() if k != first})
    with pytest.raises(CheckpointError, match=rf"{first}: shape \(1,\) does not match"):
        load_weights(model, {**state, first: torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected key 'extra'"):
        load_weights(model, {**state, "extra": torch.zeros(1)})
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="needs --spec"):
        read_checkpoint(tmp_path / "bare.pt")
    assert read_checkpoint(tmp_path / "bare.pt", spec=tiny_spec()).spec == tiny_spec()


def test_a_classifier_for_other_classes_starts_fresh_when_fine_tuning() -> None:
    source = build(tiny_spec())  # 10 classes
    target = build(tiny_spec().replace(num_classes=3))
    before = target.classifier.weight.clone()
    notes = load_weights(target, source.state_dict(), "--init-from", fresh_head=True)
    assert notes and "predicts 10 classes, the data has 3" in notes[0]
    assert torch.equal(target.classifier.weight, before)
    assert torch.equal(target.stem.conv1.weight, source.stem.conv1.weight)
    with pytest.raises(CheckpointError, match=r"classifier.weight: shape \(10, \d+\) does not match the network.s \(3, "):
        load_weights(build(tiny_spec().replace(num_classes=3)), source.state_dict())
