"""`load_data`: a source name in, deterministic train/val/test image sets out.

`load_data` reads a source (see `coatsearch.data.sources` for the names), fits every
image to the spec's size, and splits:

- test: the source's own test split; a source without one gets a stratified
  ``test_fraction`` carved with a fixed seed, so it is the same for every trial seed.
  Only final evaluation touches it.
- val: a stratified ``val_fraction`` of the training images, chosen by ``seed``. Searches
  select on it.
- train: the rest, optionally cut to ``train_size`` images (stratified) for data-size
  studies: by ``seed`` (one subset for every training seed), or, given a ``subset_seed``
  (a trial's training seed under ``data.subset: per_seed``), by ``seed`` and
  ``subset_seed`` together, so each training seed trains on its own draw while
  validation and test stay the same images.

Normalisation uses the per-channel mean and std of the training images actually used.
"""

from __future__ import annotations

import functools

import torch

from coatsearch.data.augment import AUGMENTATIONS, make_transform
from coatsearch.data.bundle import DataBundle, split_rows
from coatsearch.data.errors import DataError
from coatsearch.data.images import ImageSet, channel_stats
from coatsearch.data.listing import folder_of
from coatsearch.data.sources import RawData, read_source

#: How an image folder is read: ``prepared`` (decoded once into a shared memory-mapped
#: cache, see `coatsearch.data.prepared`), ``memory`` (decoded into this process) or
#: ``stream`` (files read per batch by loader workers, see `coatsearch.data.stream`).
DATA_MODES = ("prepared", "memory", "stream")
BAD_FILE_POLICIES = ("fail", "skip")


@functools.lru_cache(maxsize=2)
def _read(source: str, image_size: int, mode: str = "prepared", on_bad_file: str = "fail") -> RawData:
    """Sources are read once per process and size: trials of a search share the read."""
    return read_source(source, image_size, mode, on_bad_file)


def _check_arguments(
    image_size: int, val_fraction: float, test_fraction: float, train_size: int | None, augment: str,
    mode: str = "prepared", on_bad_file: str = "fail", subset_seed: int | None = None,
) -> None:
    if not isinstance(image_size, int) or image_size <= 0:
        raise DataError(f"image_size: expected a positive integer, got {image_size!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise DataError(f"{field}: expected a fraction between 0 and 1, got {value!r}")
    if train_size is not None and (not isinstance(train_size, int) or train_size <= 0):
        raise DataError(f"train_size: expected a positive integer, got {train_size!r}")
    if subset_seed is not None and (not isinstance(subset_seed, int) or subset_seed < 0):
        raise DataError(f"subset_seed: expected a whole number of at least 0, got {subset_seed!r}")
    if augment not in AUGMENTATIONS:
        raise DataError(f"augment: expected one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if mode not in DATA_MODES:
        raise DataError(f"mode: expected one of {', '.join(DATA_MODES)}, got {mode!r}")
    if on_bad_file not in BAD_FILE_POLICIES:
        raise DataError(f"on_bad_file: expected one of {', '.join(BAD_FILE_POLICIES)}, got {on_bad_file!r}")


def _stats_from_sums(sums: torch.Tensor, rows: torch.Tensor, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`channel_stats` of the images at ``rows`` from their per-image pixel sums (exact
    integer sums, then float64)."""
    total = sums[rows].sum(0).double()  # (C, 2)
    n = pixels * len(rows)
    mean = total[:, 0] / n
    var = ((total[:, 1] - total[:, 0] ** 2 / n) / max(1, n - 1)).clamp_min(0)
    return (mean / 255).float(), (var.sqrt() / 255).clamp_min(1e-3).float()


def load_data(
    source: str,
    *,
    image_size: int,
    val_fraction: float = 0.1,
    train_size: int | None = None,
    seed: int = 0,
    augment: str = "none",
    test_fraction: float = 0.1,
    mode: str = "prepared",
    on_bad_file: str = "fail",
    subset_seed: int | None = None,
) -> DataBundle:
    """Read ``source`` and split it (see the module docstring); raise `DataError` on bad data.

    ``augment``: ``none``, ``light`` (random crop + flip) or ``randaugment`` (light, then
    RandAugment n=2, m=9); it applies to the training split only. ``mode`` and
    ``on_bad_file`` say how an image folder is read (see `DATA_MODES`); other sources
    are read into memory whatever the mode. ``subset_seed`` draws the ``train_size``
    subset with ``seed`` (see the module docstring); None draws it with ``seed`` alone.
    """
    _check_arguments(image_size, val_fraction, test_fraction, train_size, augment, mode, on_bad_file, subset_seed)
    if mode == "stream" and folder_of(source) is not None:
        from coatsearch.data.stream import load_stream

        return load_stream(
            folder_of(source), image_size=image_size, val_fraction=val_fraction,  # type: ignore[arg-type]
            train_size=train_size, seed=seed, augment=augment, test_fraction=test_fraction,
            on_bad_file=on_bad_file, subset_seed=subset_seed,
        )
    raw = _read(source, image_size, "memory" if mode == "stream" else mode, on_bad_file)
    train_rows, val_rows, test_rows = split_rows(
        source, raw.train_labels, raw.test_labels, raw.classes, val_fraction=val_fraction,
        train_size=train_size, seed=seed, test_fraction=test_fraction, subset_seed=subset_seed,
    )
    images, labels = raw.train_images, raw.train_labels
    if raw.train_sums is not None:
        mean, std = _stats_from_sums(raw.train_sums, train_rows, image_size * image_size)
    else:
        mean, std = channel_stats(images[train_rows])

    def image_set(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None, transform: bool = False) -> ImageSet:
        made = make_transform(augment) if transform else None
        if rows is None:
            return ImageSet(x, y, mean, std, made)
        if raw.mapped:  # index into the shared map; never copy it
            return ImageSet(x, y[rows], mean, std, made, index=rows)
        return ImageSet(x[rows], y[rows], mean, std, made)

    if test_rows is None:
        assert raw.test_images is not None and raw.test_labels is not None
        test = image_set(raw.test_images, raw.test_labels, None)
    else:
        test = image_set(images, labels, test_rows)
    return DataBundle(
        name=raw.name,
        train=image_set(images, labels, train_rows, transform=True),
        val=image_set(images, labels, val_rows),
        test=test,
        classes=raw.classes,
        image_size=image_size,
        augment=augment,
    )
