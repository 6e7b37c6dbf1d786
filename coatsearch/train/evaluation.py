"""Measuring a model on a set: loss, accuracy and which images it got right, in eval mode;
and the fixed training subset every trial's fit is measured on."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.data import ImageSet
from coatsearch.data.pipeline import Feed
from coatsearch.data.splits import stratified_subset
from coatsearch.train.device import Runtime


def train_probe(train: Any, size: int) -> Any:
    """The fixed training subset a model's fit is measured on: ``size`` images (at most the
    whole set) with the set's class proportions, drawn by seed 0 from its labels alone, so
    every trial on the same data is measured on the same images; no augmentation."""
    size = min(size, len(train))
    return train.subset(stratified_subset(train.labels.cpu(), size, torch.Generator().manual_seed(0)))


def prepare_batch(x: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """A batch on the runtime's device, in its memory format."""
    x = x.to(runtime.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


@torch.inference_mode()
def evaluate_images(model: nn.Module, images: ImageSet, batch_size: int, runtime: Runtime,
                    feed: Feed | None = None) -> tuple[float, torch.Tensor]:
    """Mean cross entropy of ``model`` on a set, in eval mode, and which images it got
    right (a CPU bool tensor in the set's order: the per-image record paired comparisons
    read, `coatsearch.perimage`)."""
    model.eval()
    loss = torch.zeros((), device=runtime.device, dtype=torch.float64)
    hits: list[torch.Tensor] = []
    feed = feed or Feed(images)
    chunks = (torch.arange(start, min(start + batch_size, len(images))) for start in range(0, len(images), batch_size))
    seen = 0
    for x, y in feed.batches(chunks):
        seen += len(y)
        x, y = prepare_batch(x, runtime), y.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum")
        hits.append(logits.argmax(1) == y)
    correct = torch.cat(hits).cpu() if hits else torch.zeros(0, dtype=torch.bool)
    return float(loss) / max(1, seen), correct


def evaluate(model: nn.Module, images: ImageSet, batch_size: int, runtime: Runtime,
             feed: Feed | None = None) -> tuple[float, float]:
    """Mean cross entropy and accuracy of ``model`` on a set, in eval mode."""
    loss, correct = evaluate_images(model, images, batch_size, runtime, feed)
    return loss, int(correct.sum()) / max(1, len(correct))
