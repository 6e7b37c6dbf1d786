"""`fit`: train one spec on one dataset and report every epoch.

A trial is a function from (spec, config, data) to metrics, and the search backends call
thousands of them, so `fit` never raises for what a trial can do wrong: a non-finite loss
ends it as ``diverged``, a runtime error (out of memory, say) as ``failed``. Bad *input*
(an unavailable device, a spec that cannot take the data's size) still raises, because
every trial would fail the same way.

Repeatability: the model is initialised under ``torch.manual_seed(seed)`` and batches,
augmentation and mixup draw from generators seeded with ``seed``, inside
`torch.random.fork_rng`, so the caller's random state is left as it was and two CPU runs
with the same seed and thread count give identical metrics.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.checkpoint import load_weights
from coatsearch.data import DataBundle, DataError
from coatsearch.data.pipeline import Feed, auto_workers, place
from coatsearch.errors import first_line
from coatsearch.nn import build
from coatsearch.spec import NetSpec
from coatsearch.status import Status
from coatsearch.train.batches import IndexStream, round_lengths
from coatsearch.train.checkpoints import Checkpoints
from coatsearch.train.config import TrainConfig, TrainConfigError
from coatsearch.train.device import Runtime, make_runtime
from coatsearch.train.evaluation import evaluate, evaluate_images, prepare_batch, train_probe
from coatsearch.train.metrics import EpochMetrics, TrialResult
from coatsearch.train.optim import make_optimizer

#: Called after each epoch; returning True asks `fit` to stop (status ``stopped``).
EpochCallback = Callable[[EpochMetrics], bool | None]
#: Called after each training batch with (epoch, batch, batches per epoch), for progress bars.
BatchHook = Callable[[int, int, int], None]

_logger = logging.getLogger("coatsearch.train")


@dataclass(frozen=True)
class Replicas:
    """This process's place in a data-parallel trial (``torch.distributed`` already set up).

    Each of the ``world`` replicas trains on its slice of every global batch of
    ``world x batch_size`` images; gradients are averaged by `DistributedDataParallel`,
    so every replica holds the same weights after every step. The learning rate is
    scaled linearly with the global batch: ``lr x world`` (``train.lr`` is the rate at
    ``train.batch_size``), the same as one process training on ``world x batch_size``
    images at ``world x lr``.
    """

    rank: int
    world: int


#: The replicas of the data-parallel trial this process belongs to, for `fit` calls that
#: do not pass ``replicas`` (a Ray Train worker sets it around the trial it runs).
CURRENT_REPLICAS: contextvars.ContextVar[Replicas | None] = contextvars.ContextVar("replicas", default=None)


class _NonFinite(Exception):
    """A training loss that is NaN or infinite: the trial has diverged."""


def adapt_spec(spec: NetSpec, data: DataBundle) -> tuple[NetSpec, list[str]]:
    """The spec with input channels, classes and image size taken from the data.

    A 3-channel spec on grayscale data gets a 1-channel stem; the head gets the data's
    classes. Returns the notes to log, one per change.
    """
    changes: dict[str, int] = {}
    notes: list[str] = []
    for field, value, why in (
        ("in_channels", data.in_channels, f"{data.name} images have {data.in_channels} channel(s); the stem takes them"),
        ("num_classes", data.num_classes, f"{data.name} has {data.num_classes} classes; the head predicts them"),
        ("image_size", data.image_size, f"the data was loaded at {data.image_size}px"),
    ):
        if getattr(spec, field) != value:
            changes[field] = value
            notes.append(f"spec {field} {getattr(spec, field)} -> {value}: {why}")
    return (spec.replace(**changes) if changes else spec), notes


class _Trainer:
    """The state of one `fit` call: model, optimiser, schedule, generators."""

    def __init__(self, model: nn.Module, config: TrainConfig, data: DataBundle, runtime: Runtime,
                 feed: Feed, replicas: Replicas | None = None) -> None:
        self.model, self.config, self.runtime, self.feed, self.replicas = model, config, runtime, feed, replicas
        self.train_set = data.train
        world = replicas.world if replicas is not None else 1
        self.global_batch = config.batch_size * world
        full, rest = divmod(len(data.train), self.global_batch)
        per_pass = full + (rest >= 2 * world)  # see `IndexStream`
        if per_pass == 0:
            raise DataError(f"{data.name}: at least 2 training images are needed, got {len(data.train)}")
        #: optimiser steps of each epoch: one pass over the data, or ``steps`` split evenly
        self.round_steps = round_lengths(config.steps, config.epochs) if config.steps else [per_pass] * config.epochs
        total = sum(self.round_steps)
        warmup = min(total, round(config.warmup_epochs * total / config.epochs))
        self.optimizer, self.schedule = make_optimizer(
            model, config.lr, config.weight_decay, total, warmup
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        # batch order is drawn from `generator`, the same on every replica; augmentation
        # and mixup from `augment_rng`, the same generator in a single process (as it
        # always was), a generator of its own on each replica
        self.augment_rng = self.generator
        if world > 1:
            self.augment_rng = torch.Generator().manual_seed(config.seed + 1_000_003 * replicas.rank)  # type: ignore[union-attr]
        self.mixup_rng = np.random.default_rng(config.seed)
        self._stream = IndexStream(len(self.train_set), self.global_batch, self.generator, self.replicas)

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that the next epoch depends on: optimiser,
        schedule, loss scaler, generators, the batch stream's place (see `resume`)."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.runtime.scaler.state_dict(), "generator": self.generator.get_state(),
            "augment_rng": self.augment_rng.get_state(), "mixup_rng": self.mixup_rng.bit_generator.state,
            "order": self._stream.order, "position": self._stream.position, "torch_rng": torch.get_rng_state(),
        }
        if self.runtime.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.runtime.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s moment, as if the run had never stopped."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.runtime.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        if self.augment_rng is not self.generator:
            self.augment_rng.set_state(state["augment_rng"])
        self.mixup_rng.bit_generator.state = state["mixup_rng"]
        self._stream.order, self._stream.position = state["order"], state["position"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.runtime.device)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and the number of correct predictions (against the dominant mixup label)."""
        smoothing = self.config.label_smoothing
        if self.config.mixup > 0:
            lam = float(self.mixup_rng.beta(self.config.mixup, self.config.mixup))
            perm = torch.randperm(len(y), generator=self.augment_rng).to(y.device)
            x = lam * x + (1 - lam) * x[perm]
            with self.runtime.autocast():
                logits = self.model(x)
            logits = logits.float()
            loss = lam * F.cross_entropy(logits, y, label_smoothing=smoothing) + (
                1 - lam
            ) * F.cross_entropy(logits, y[perm], label_smoothing=smoothing)
            target = y if lam >= 0.5 else y[perm]
        else:
            with self.runtime.autocast():
                logits = self.model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            target = y
        return loss, (logits.detach().argmax(1) == target).sum()

    def train_epoch(self, epoch: int, on_batch: BatchHook | None) -> tuple[float, float, float, float]:
        """One pass over the training set: (loss, accuracy, images/s, last lr)."""
        model, runtime, scaler = self.model, self.runtime, self.runtime.scaler
        model.train()
        loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float64)
        correct = torch.zeros((), device=runtime.device, dtype=torch.int64)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        steps = self.round_steps[epoch - 1]
        order = itertools.islice(self._stream, steps)
        for step, (x, y) in enumerate(self.feed.batches(order, self.augment_rng), 1):
            x, y = prepare_batch(x, runtime), y.to(runtime.device, non_blocking=True)
            loss, hits = self._loss(x, y)
            loss_sum += loss.detach() * len(y)
            correct += hits
            seen += len(y)
            if step % runtime.check_every == 0 and not torch.isfinite(loss_sum):
                raise _NonFinite(f"non-finite training loss at epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if self.config.grad_clip is not None:
                scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            scaler.step(self.optimizer)
            scaler.update()
            self.schedule.step()
            runtime.step_barrier()
            if on_batch is not None:
                on_batch(epoch, step, steps)
        if self.replicas is not None and self.replicas.world > 1:
            import torch.distributed as dist

            totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=loss_sum.device)])
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1].long(), int(totals[2])
        if not torch.isfinite(loss_sum):
            raise _NonFinite(f"non-finite training loss in epoch {epoch}")
        elapsed = time.perf_counter() - start
        return float(loss_sum) / seen, int(correct) / seen, seen / elapsed, lr


def compile_model(model: nn.Module, device: torch.device) -> Any:
    """``torch.compile(model)``, or a one-line `TrainConfigError` where it cannot work."""
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            raise TrainConfigError(
                "compile: torch.compile needs a C++ compiler on the CPU (g++ or clang++); none found"
            )
    try:
        return torch.compile(model)
    except RuntimeError as exc:
        first = first_line(exc)
        raise TrainConfigError(f"compile: torch.compile is unavailable here: {first}") from None


def fit(
    spec: NetSpec,
    config: TrainConfig,
    data: DataBundle,
    callback: EpochCallback | None = None,
    log: Callable[[str], None] | None = None,
    *,
    on_batch: BatchHook | None = None,
    replicas: Replicas | None = None,
    checkpoints: Checkpoints | None = None,
    init_weights: Mapping[str, torch.Tensor] | None = None,
) -> TrialResult:
    """Train ``spec`` on ``data`` for ``config.epochs`` epochs; see `TrialResult`.

    ``callback(metrics)`` runs after every epoch (the search backends report through it)
    and may return True to stop early. ``log`` receives one-line notes (spec adapted to
    the data, device); it defaults to the ``coatsearch.train`` logger. ``on_batch`` drives
    progress bars. ``replicas`` makes this process one replica of a data-parallel trial.
    ``checkpoints`` saves the run after every epoch and resumes it from its last save
    (`Checkpoints`); ``init_weights`` starts from these weights instead of a fresh
    initialisation (a `CheckpointError` names the first key or shape that does not fit).

    Input: a set on the CPU is gathered batch by batch in this thread; on CUDA a set that
    fits in a quarter of the free memory is copied there once, a larger one stays on the
    host and its batches are pinned and copied non-blocking. Loader workers
    (``config.loader_workers``, by default only for streamed files and for RandAugment
    on the host for an accelerator) build batches ahead.
    """
    log = log or _logger.info
    started = time.perf_counter()
    replicas = replicas or CURRENT_REPLICAS.get()
    if replicas is not None and replicas.world > 1:
        config = config.replace(lr=config.lr * replicas.world)
        log(f"replica {replicas.rank} of {replicas.world}: global batch {replicas.world * config.batch_size}, lr {config.lr:g}")
    runtime = make_runtime(config)
    spec, notes = adapt_spec(spec, data)
    for note in notes:
        log(note)
    log(f"{data.summary()}; {runtime.describe()}")

    threads = torch.get_num_threads()
    fork_devices = [runtime.device] if runtime.device.type == "cuda" else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=fork_devices))
        if config.threads is not None:
            torch.set_num_threads(config.threads)
            stack.callback(torch.set_num_threads, threads)
        torch.manual_seed(config.seed)
        model = build(spec)
        if init_weights is not None:
            for note in load_weights(model, init_weights, "--init-from", fresh_head=True):
                log(note)
        model = model.to(runtime.device)
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        result = TrialResult(Status.COMPLETE, spec, sum(p.numel() for p in model.parameters()))
        trained: nn.Module = model
        if replicas is not None and replicas.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [runtime.device] if runtime.device.type == "cuda" else None
            trained = DistributedDataParallel(model, device_ids=ids)
        feeds = []
        sets: dict[str, tuple[Any, bool]] = {}
        for name in ("train", "val", "test"):
            if name == "test" and not config.eval_test:
                sets[name] = (getattr(data, name), False)
                continue
            sets[name] = place(getattr(data, name), runtime.device)
        train_set, train_on_device = sets["train"]
        # a view of the placed training set: on a device it is already there
        sets["probe"] = (train_probe(train_set, len(data.val)), train_on_device)
        data = replace(data, **{name: s for name, (s, _) in sets.items() if name != "probe"})
        pin = runtime.device.type == "cuda"

        def feed(name: str) -> Feed:
            dataset, on_device = sets[name]
            workers = config.loader_workers
            if workers is None:
                workers = auto_workers(dataset, runtime.device, on_device)
            made = Feed(dataset, workers, pin=pin and not on_device)
            feeds.append(made)
            return made

        def close_feeds() -> None:
            for made in feeds:
                made.close()

        stack.callback(close_feeds)
        trainer = _Trainer(trained, config, data, runtime, feed("train"), replicas)
        val_feed, probe_feed = feed("val"), feed("probe")
        if config.compile:
            trainer.model = compile_model(trained, runtime.device)
        eval_batch = 2 * config.batch_size
        first = 1 if checkpoints is None else checkpoints.restore(trainer, model, result, log)

        for epoch in range(first, config.epochs + 1):
            epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
            try:
                train_loss, train_acc, speed, lr = trainer.train_epoch(epoch, on_batch)
                val_loss, val_correct = evaluate_images(model, data.val, eval_batch, runtime, val_feed)
                val_acc = int(val_correct.sum()) / max(1, len(val_correct))
                fit_loss, fit_acc = evaluate(model, sets["probe"][0], eval_batch, runtime, probe_feed)
            except _NonFinite as exc:
                result.status, result.reason = Status.DIVERGED, str(exc)
                break
            except RuntimeError as exc:
                result.status = Status.FAILED
                result.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                break
            metrics = EpochMetrics(
                epoch=epoch, train_loss_running=train_loss, train_acc_running=train_acc,
                train_eval_loss=fit_loss, train_eval_acc=fit_acc, val_loss=val_loss,
                val_acc=val_acc, gap=fit_acc - val_acc, images_per_s=speed,
                wall_time=time.perf_counter() - started, lr=lr,
                epoch_s=time.perf_counter() - epoch_start, epoch_cpu_s=time.process_time() - epoch_cpu,
            )
            result.epochs.append(metrics)
            result.val_correct = val_correct.numpy()
            if checkpoints is not None:
                checkpoints.save(trainer, model, result)
            if callback is not None and callback(metrics) and epoch < config.epochs:
                result.status = Status.STOPPED
                break

        if config.eval_test and result.status in (Status.COMPLETE, Status.STOPPED):
            result.test_loss, test_correct = evaluate_images(model, data.test, eval_batch, runtime, feed("test"))
            result.test_acc = int(test_correct.sum()) / max(1, len(test_correct))
            result.test_correct = test_correct.numpy()
    if result.reason:
        log(f"trial {result.status}: {result.reason}")
    result.wall_time = time.perf_counter() - started
    return result
