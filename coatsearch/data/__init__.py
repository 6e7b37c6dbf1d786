"""Datasets for trials: a source name in, deterministic train/val/test image sets out.

`load_data` reads a source (see `coatsearch.data.sources` for the names), fits every
image to the spec's size, and splits:

- test: the source's own test split; a source without one gets a stratified
  ``test_fraction`` carved with a fixed seed, so it is the same for every trial seed.
  Only final evaluation touches it.
- val: a stratified ``val_fraction`` of the training images, chosen by ``seed``. Searches
  select on it.
- train: the rest, optionally cut to ``train_size`` images (stratified, by ``seed``) for
  data-size studies.

Normalisation uses the per-channel mean and std of the training images actually used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from coatsearch.data.augment import AUGMENTATIONS, make_transform
from coatsearch.data.errors import DataError
from coatsearch.data.images import ImageSet, channel_stats
from coatsearch.data.sources import FASHION_MNIST_CLASSES, RawData, read_source
from coatsearch.data.splits import stratified_split, stratified_subset

__all__ = [
    "AUGMENTATIONS", "DataBundle", "DataError", "FASHION_MNIST_CLASSES", "ImageSet", "load_data",
]

#: Seed of the test split carved from sources that have none, independent of trial seeds.
TEST_SPLIT_SEED = 0


@dataclass(frozen=True)
class DataBundle:
    """The three splits of one source at one image size, ready for `coatsearch.fit`."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    image_size: int
    augment: str = "none"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    def to(self, device: torch.device | str) -> DataBundle:
        """The bundle with all three splits' tensors on ``device``."""
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )

    def summary(self) -> str:
        """One line for logs: sizes of the splits and the image shape."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, {self.in_channels}x{self.image_size}x{self.image_size}, "
            f"augment {self.augment}"
        )


@functools.lru_cache(maxsize=2)
def _read(source: str, image_size: int) -> RawData:
    """Sources are read once per process and size: trials of a search share the read."""
    return read_source(source, image_size)


def _check_arguments(
    image_size: int, val_fraction: float, test_fraction: float, train_size: int | None, augment: str
) -> None:
    if not isinstance(image_size, int) or image_size <= 0:
        raise DataError(f"image_size: expected a positive integer, got {image_size!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise DataError(f"{field}: expected a fraction between 0 and 1, got {value!r}")
    if train_size is not None and (not isinstance(train_size, int) or train_size <= 0):
        raise DataError(f"train_size: expected a positive integer, got {train_size!r}")
    if augment not in AUGMENTATIONS:
        raise DataError(f"augment: expected one of {', '.join(AUGMENTATIONS)}, got {augment!r}")


def load_data(
    source: str,
    *,
    image_size: int,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    seed: int = 0,
    augment: str = "none",
    test_fraction: float = 0.1,
) -> DataBundle:
    """Read ``source`` and split it (see the module docstring); raise `DataError` on bad data.

    ``augment``: ``none``, ``light`` (random crop + flip) or ``randaugment`` (light, then
    RandAugment n=2, m=9); it applies to the training split only.
    """
    _check_arguments(image_size, val_fraction, test_fraction, train_size, augment)
    raw = _read(source, image_size)
    images, labels = raw.train_images, raw.train_labels
    if raw.test_images is None:
        kept, held = stratified_split(labels, test_fraction, torch.Generator().manual_seed(TEST_SPLIT_SEED))
        test_images, test_labels = images[held], labels[held]
        images, labels = images[kept], labels[kept]
    else:
        assert raw.test_labels is not None  # a source with test images has their labels
        test_images, test_labels = raw.test_images, raw.test_labels
    present = torch.unique(labels)
    if len(present) < 2:
        only = raw.classes[int(present[0])] if len(present) else "none"
        raise DataError(f"{source}: the training data has one class only ({only}); need at least two")

    generator = torch.Generator().manual_seed(seed)
    kept, held = stratified_split(labels, val_fraction, generator)
    if train_size is not None:
        if train_size > len(kept):
            raise DataError(
                f"train_size: {train_size} is more than the {len(kept)} training images of {source}"
            )
        kept = kept[stratified_subset(labels[kept], train_size, generator)]
    if len(test_labels) == 0 or len(held) == 0:
        which = "test" if len(test_labels) == 0 else "validation"
        raise DataError(f"{source}: too few images per class for a {which} split")

    mean, std = channel_stats(images[kept])

    def image_set(x: torch.Tensor, y: torch.Tensor, transform: bool = False) -> ImageSet:
        return ImageSet(x, y, mean, std, make_transform(augment) if transform else None)

    return DataBundle(
        name=raw.name,
        train=image_set(images[kept], labels[kept], transform=True),
        val=image_set(images[held], labels[held]),
        test=image_set(test_images, test_labels),
        classes=raw.classes,
        image_size=image_size,
        augment=augment,
    )
