"""Streaming: image files read per batch, for folders too large to prepare.

``data.mode: stream`` keeps only the file list and labels in memory. A `StreamSet` is a
set like `ImageSet` (``batch(indices, generator)``) whose batches are decoded from the
files, with Pillow (JPEG ``draft`` mode as in `coatsearch.data.prepared`), by the
training loop's `DataLoader` workers. Normalisation uses the per-channel statistics of a
stratified sample of the training images (`STATS_SAMPLE`), decoded once at load.

An unreadable file raises `DataError` naming it (``on_bad_file: fail``), or is left out
of its batch (``skip``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from coatsearch.data.bundle import DataBundle
from coatsearch.data.decode import decode_fitted, mode_of_all
from coatsearch.data.errors import DataError
from coatsearch.data.fingerprint import list_source
from coatsearch.data.images import BatchTransform, ImageSet, channel_stats
from coatsearch.data.splits import stratified_subset

#: Training images decoded at load for the normalisation statistics.
STATS_SAMPLE = 1024


@dataclass(frozen=True, eq=False)
class StreamSet(Dataset):
    """Labelled image files, decoded to uint8 ``(C, size, size)`` when a batch needs them."""

    paths: tuple[str, ...]
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    mode: str
    size: int
    transform: BatchTransform | None = None
    skip_bad: bool = False

    streamed = True

    def __repr__(self) -> str:
        return f"StreamSet({len(self)} files at {self.size}px, {self.mode})"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([index]))
        return x[0], int(y[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        channels = 1 if self.mode == "L" else 3
        return channels, self.size, self.size

    @property
    def nbytes(self) -> int:
        c, h, w = self.shape
        return len(self) * c * h * w

    def read(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels at ``indices`` (unreadable files left out with ``skip_bad``)."""
        images, kept = [], []
        for i in indices.tolist():
            try:
                images.append(torch.from_numpy(decode_fitted(Path(self.paths[i]), self.mode, self.size).copy()))
            except DataError:
                if not self.skip_bad:
                    raise
                continue
            kept.append(i)
        if not images:
            return torch.zeros((0, *self.shape), dtype=torch.uint8), self.labels[:0]
        return torch.stack(images), self.labels[torch.tensor(kept, dtype=torch.int64)]

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.read(indices)
        x = images.float().div_(255.0)
        if self.transform is not None and len(x):
            x = self.transform(x, generator)
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1), labels

    def to(self, device: torch.device | str) -> StreamSet:
        """Streamed sets stay on the host; batches are copied to the device as they come."""
        return self

    def without_transform(self) -> StreamSet:
        return replace(self, transform=None)

    def subset(self, positions: torch.Tensor) -> StreamSet:
        """The files at ``positions`` of this set, without augmentation."""
        return replace(self, paths=tuple(self.paths[i] for i in positions.tolist()),
                       labels=self.labels[positions], transform=None)


def load_stream(
    root: Path, *, image_size: int, val_fraction: float, train_size: int | None, seed: int,
    augment: str, test_fraction: float, on_bad_file: str, subset_seed: int | None = None,
) -> DataBundle:
    """`load_data` for ``mode: stream``: the same splits as the other modes, over files."""
    from coatsearch.data.augment import make_transform
    from coatsearch.data.bundle import split_rows

    listing = list_source(root)
    paths, labels_list = listing.splits["train"]
    labels = torch.tensor(labels_list, dtype=torch.int64)
    test = listing.splits.get("test")
    test_labels = torch.tensor(test[1], dtype=torch.int64) if test else None
    mode = mode_of_all(paths, on_bad_file == "skip")
    train_rows, val_rows, test_rows = split_rows(
        str(root), labels, test_labels, listing.classes, val_fraction=val_fraction,
        train_size=train_size, seed=seed, test_fraction=test_fraction, subset_seed=subset_seed,
    )
    skip = on_bad_file == "skip"
    names = tuple(str(p) for p in paths)
    sample = train_rows
    if len(sample) > STATS_SAMPLE:
        sample = sample[stratified_subset(labels[sample], STATS_SAMPLE, torch.Generator().manual_seed(0))]
    probe = StreamSet(names, labels, torch.zeros(1), torch.ones(1), mode, image_size, skip_bad=skip)
    images, _ = probe.read(sample)
    if not len(images):
        raise DataError(f"{root}: no readable image among the {len(sample)} sampled for normalisation")
    mean, std = channel_stats(images)

    def subset(rows: torch.Tensor, transform: bool = False) -> StreamSet:
        return StreamSet(tuple(names[i] for i in rows.tolist()), labels[rows], mean, std, mode, image_size,
                         make_transform(augment) if transform else None, skip)

    if test_rows is None:
        assert test is not None and test_labels is not None
        test_set = StreamSet(tuple(str(p) for p in test[0]), test_labels, mean, std, mode, image_size, None, skip)
    else:
        test_set = subset(test_rows)
    return DataBundle(
        name=root.name, train=subset(train_rows, transform=True), val=subset(val_rows), test=test_set,
        classes=listing.classes, image_size=image_size, augment=augment,
    )


__all__ = ["STATS_SAMPLE", "ImageSet", "StreamSet", "load_stream"]
