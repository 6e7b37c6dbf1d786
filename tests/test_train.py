"""Trainer: metrics, repeatability, divergence, early stopping, spec adaptation, config errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from coatsearch.data import DataBundle, load_data
from coatsearch.nn import build
from coatsearch.train import EpochMetrics, TrainConfig, TrainConfigError, adapt_spec, fit
from coatsearch.train.optim import param_groups, warmup_cosine
from tests.conftest import tiny_spec

FAST = dict(batch_size=32, threads=2)


@pytest.fixture(scope="module")
def small_data() -> DataBundle:
    """300 Fashion-MNIST images at 16x16: a trial of two epochs takes about a second."""
    return load_data("fashion-mnist", image_size=16, train_size=300, val_fraction=0.1, augment="light")


def _spec():
    return tiny_spec(image_size=16)  # 3 channels, 10 classes: adapted to 1 channel


def _numbers(m: EpochMetrics) -> tuple[float, ...]:
    return (m.train_loss_running, m.train_acc_running, m.train_eval_acc, m.val_loss, m.val_acc, m.lr)


def test_fit_reports_every_epoch(small_data: DataBundle) -> None:
    seen: list[EpochMetrics] = []
    notes: list[str] = []
    result = fit(_spec(), TrainConfig(epochs=2, eval_test=True, **FAST), small_data,
                 callback=seen.append, log=notes.append)
    assert result.status == "complete" and result.reason is None
    assert seen == result.epochs and [m.epoch for m in seen] == [1, 2]
    for m in seen:
        assert 0 <= m.train_acc_running <= 1 and 0 <= m.train_eval_acc <= 1 and 0 <= m.val_acc <= 1
        assert m.gap == pytest.approx(m.train_eval_acc - m.val_acc)
        assert m.images_per_s > 0 and m.train_loss_running > 0 and m.val_loss > 0
        # the epoch's own wall and CPU time: what a replay's simulated clock advances by
        assert m.epoch_s is not None and 0 < m.epoch_s <= m.wall_time
        assert m.epoch_cpu_s is not None and m.epoch_cpu_s > 0
    assert seen[1].wall_time > seen[0].wall_time and seen[1].lr < seen[0].lr
    assert seen[1].val_loss < math.log(10)  # it learned something
    assert result.test_acc is not None and 0 <= result.test_acc <= 1
    # the final network's correctness per image, in each set's order, gives its accuracies
    assert result.val_correct is not None and len(result.val_correct) == len(small_data.val)
    assert result.val_correct.mean() == pytest.approx(seen[-1].val_acc)
    assert result.test_correct is not None and len(result.test_correct) == len(small_data.test)
    assert result.test_correct.mean() == pytest.approx(result.test_acc)
    assert result.spec.in_channels == 1 and result.params == sum(
        p.numel() for p in build(result.spec).parameters()
    )
    assert any("in_channels 3 -> 1" in n for n in notes)
    d = result.to_dict()
    assert d["status"] == "complete" and d["final"]["val_acc"] == seen[-1].val_acc
    assert d["spec"]["in_channels"] == 1 and len(d["epochs"]) == 2


def test_same_seed_repeats_exactly_and_other_seeds_differ(small_data: DataBundle) -> None:
    config = TrainConfig(epochs=1, seed=7, mixup=0.2, **FAST)
    a = fit(_spec().replace(drop_path=0.1), config, small_data)
    b = fit(_spec().replace(drop_path=0.1), config, small_data)
    c = fit(_spec().replace(drop_path=0.1), config.replace(seed=8), small_data)
    assert [_numbers(m) for m in a.epochs] == [_numbers(m) for m in b.epochs]
    assert _numbers(a.epochs[0]) != _numbers(c.epochs[0])


def test_fit_leaves_the_callers_random_state_and_threads_alone(small_data: DataBundle) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    fit(_spec(), TrainConfig(epochs=1, batch_size=32, threads=1), small_data)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads


def test_nan_loss_ends_the_trial_as_diverged(small_data: DataBundle) -> None:
    calls = {"n": 0}

    def poison_third_batch(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        calls["n"] += 1
        return x * float("nan") if calls["n"] == 3 else x

    data = replace(small_data, train=replace(small_data.train, transform=poison_third_batch))
    result = fit(_spec(), TrainConfig(epochs=2, eval_test=True, **FAST), data)
    assert result.status == "diverged"
    assert result.reason == "non-finite training loss at epoch 1, step 3"
    assert result.epochs == [] and result.test_acc is None
    assert calls["n"] == 3  # it stopped at once


def test_callback_can_stop_early(small_data: DataBundle) -> None:
    result = fit(_spec(), TrainConfig(epochs=3, eval_test=True, **FAST), small_data,
                 callback=lambda m: m.epoch >= 1)
    assert result.status == "stopped" and len(result.epochs) == 1 and result.test_acc is not None


def test_runtime_errors_fail_the_trial_without_raising(small_data: DataBundle) -> None:
    def broken(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x[:, :, :5]  # a shape the network cannot take

    data = replace(small_data, train=replace(small_data.train, transform=broken))
    result = fit(_spec(), TrainConfig(epochs=1, **FAST), data)
    assert result.status == "failed" and result.reason.startswith("RuntimeError")


def test_adapt_spec_follows_the_data(small_data: DataBundle) -> None:
    spec = tiny_spec(image_size=32).replace(num_classes=1000)
    adapted, notes = adapt_spec(spec, small_data)
    assert (adapted.in_channels, adapted.num_classes, adapted.image_size) == (1, 10, 16)
    assert len(notes) == 3 and "num_classes 1000 -> 10" in notes[1]
    same, none = adapt_spec(adapted, small_data)
    assert same is adapted and none == []


def test_train_config_errors_are_one_line() -> None:
    with pytest.raises(TrainConfigError, match=r"^epochs: Input should be greater than 0 \(got 0\)$"):
        TrainConfig(epochs=0)
    with pytest.raises(TrainConfigError, match=r"^lrate: unknown field$"):
        TrainConfig(lrate=1.0)
    with pytest.raises(TrainConfigError, match=r"^run.yaml: device: Input should be"):
        TrainConfig.from_dict({"device": "tpu"}, source="run.yaml")
    with pytest.raises(TrainConfigError, match="device: cuda requested"):
        if not torch.cuda.is_available():
            fit(_spec(), TrainConfig(device="cuda"), load_data("fashion-mnist", image_size=16, train_size=50))
        else:  # pragma: no cover - only where CUDA exists
            raise TrainConfigError("device: cuda requested")
    assert TrainConfig().replace(lr=0.1).lr == 0.1


def test_train_config_from_yaml_file(tmp_path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("trainer:\n  epochs: 3\n  mixup: 0.2\n")
    assert TrainConfig.from_yaml_file(path) == TrainConfig(epochs=3, mixup=0.2)
    path.write_text("epochs: [1\n")
    with pytest.raises(TrainConfigError, match="t.yaml: malformed YAML"):
        TrainConfig.from_yaml_file(path)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == 1.0 and factor(10) == 1.0
    values = [factor(s) for s in range(10, 100)]
    assert values == sorted(values, reverse=True) and values[-1] < 0.001


def test_weight_decay_skips_biases_norms_and_relative_tables() -> None:
    model = build(tiny_spec())
    decay, keep = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 and "rel_bias" not in names[id(p)] for p in decay["params"])
    assert any("rel_bias" in names[id(p)] for p in keep["params"]) and keep["weight_decay"] == 0.0


def test_train_eval_acc_is_the_final_weights_in_eval_mode_on_a_fixed_stratified_subset(small_data, monkeypatch) -> None:
    from coatsearch.data.splits import stratified_subset
    from coatsearch.train.device import make_runtime
    from coatsearch.train.loop import evaluate, train_probe

    train = small_data.train
    small = train_probe(train, 100)
    assert len(small) == 100 and small.transform is None
    # the class shares of the training set, within one image per class
    train_counts = torch.bincount(train.labels, minlength=10).double()
    probe_counts = torch.bincount(small.labels, minlength=10).double()
    assert (probe_counts - train_counts * 100 / len(train)).abs().max() <= 1
    # the same images every time (no trial seed in it), and the training set's own rows
    again = train_probe(train, 100)
    assert torch.equal(again.gather(torch.arange(100)), small.gather(torch.arange(100)))
    positions = stratified_subset(train.labels, 100, torch.Generator().manual_seed(0))
    x, y = small.batch(torch.arange(100))
    want, want_y = train.without_transform().batch(positions)
    assert torch.equal(x, want) and torch.equal(y, want_y)
    # capped at the training set: here the validation set is larger
    probe = train_probe(train, len(small_data.val))
    assert len(small_data.val) > len(train) == len(probe)

    captured = {}
    config = TrainConfig(epochs=1, seed=3, **FAST)
    import coatsearch.train.loop as loop

    real_build = loop.build

    def keep(spec):  # the trained module, to measure it again after fit
        captured["model"] = real_build(spec)
        return captured["model"]

    monkeypatch.setattr(loop, "build", keep)
    result = fit(_spec(), config, small_data)
    m = result.epochs[-1]
    _, again = evaluate(captured["model"], probe, 64, make_runtime(config))
    assert m.train_eval_acc == pytest.approx(again)
    assert m.gap == pytest.approx(m.train_eval_acc - m.val_acc)
    # a running train-mode mean over moving weights is a different number
    assert m.train_acc_running != m.train_eval_acc


def _steps_run(size: int, config: TrainConfig, monkeypatch) -> tuple[int, list[tuple[int, int, int]], object]:
    """(scheduled optimiser steps, (epoch, batch, batches in the epoch) per batch, result)."""
    import coatsearch.train.loop as loop

    data = load_data("fashion-mnist", image_size=16, train_size=size, val_fraction=0.1)
    totals: list[int] = []
    real = loop.make_optimizer

    def counting(model, lr, wd, total, warmup):
        totals.append(total)
        return real(model, lr, wd, total, warmup)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "make_optimizer", counting)
        batches: list[tuple[int, int, int]] = []
        result = fit(_spec(), config, data, on_batch=lambda e, b, n: batches.append((e, b, n)))
    return totals[0], batches, result


@pytest.mark.slow
def test_steps_fix_the_number_of_updates_whatever_the_data_size(monkeypatch) -> None:
    from coatsearch.train.loop import round_lengths

    assert round_lengths(10, 3) == [3, 3, 4] and sum(round_lengths(7, 7)) == 7
    for size in (100, 300):
        total, batches, result = _steps_run(size, TrainConfig(epochs=2, steps=9, **FAST), monkeypatch)
        assert result.status == "complete" and len(result.epochs) == 2 and total == 9
        # 9 updates in rounds of 4 and 5, running on past the end of a pass when needed
        assert [b for b in batches if b[1] == b[2]] == [(1, 4, 4), (2, 5, 5)] and len(batches) == 9
    # without steps an epoch is one pass: 300 images at batch 32 -> 9 full batches + 12
    total, batches, _ = _steps_run(300, TrainConfig(epochs=1, **FAST), monkeypatch)
    assert total == len(batches) == 10


def test_steps_below_the_epochs_are_refused() -> None:
    with pytest.raises(TrainConfigError, match="steps: at least one step per epoch"):
        TrainConfig(epochs=4, steps=3)
