"""`DataBundle` (the three splits of one source) and the rule that makes the splits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from coatsearch.data.errors import DataError
from coatsearch.data.splits import stratified_split, stratified_subset

#: Seed of the test split carved from sources that have none, independent of trial seeds.
TEST_SPLIT_SEED = 0


@dataclass(frozen=True)
class DataBundle:
    """The three splits of one source at one image size, ready for `coatsearch.fit`."""

    name: str
    train: Any  # ImageSet or StreamSet: ``batch``, ``shape``, ``to``, ``nbytes``
    val: Any
    test: Any
    classes: tuple[str, ...]
    image_size: int
    augment: str = "none"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.shape[0])

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


def subset_generator(seed: int, subset_seed: int) -> torch.Generator:
    """The generator of a training subset drawn per training seed: seeded from the data
    seed and the training seed together through NumPy's `SeedSequence`, so nearby pairs
    ((0, 1) and (1, 0)) give unrelated streams."""
    state = np.random.SeedSequence([seed, subset_seed]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def split_rows(
    source: str, labels: torch.Tensor, test_labels: torch.Tensor | None, classes: tuple[str, ...], *,
    val_fraction: float, train_size: int | None, seed: int, test_fraction: float,
    subset_seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rows of the source's training images for (train, val, test); test is None when the
    source has its own test split. See `coatsearch.data.loading` for the rules.

    ``seed`` draws the validation split. The ``train_size`` subset of the rest is drawn by
    the same generator, after it, when ``subset_seed`` is None (one subset for every
    training seed), else by a generator of ``seed`` and ``subset_seed`` together
    (`subset_generator`): the validation and test rows are the same either way."""
    rows = torch.arange(len(labels))
    held_test = None
    if test_labels is None:
        kept, held_test = stratified_split(labels, test_fraction, torch.Generator().manual_seed(TEST_SPLIT_SEED))
        rows = rows[kept]
    present = torch.unique(labels[rows])
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DataError(f"{source}: the training data has one class only ({only}); need at least two")

    generator = torch.Generator().manual_seed(seed)
    kept, held = stratified_split(labels[rows], val_fraction, generator)
    if train_size is not None:
        if train_size > len(kept):
            raise DataError(
                f"train_size: {train_size} is more than the {len(kept)} training images of {source}"
            )
        drawn = generator if subset_seed is None else subset_generator(seed, subset_seed)
        kept = kept[stratified_subset(labels[rows][kept], train_size, drawn)]
    n_test = len(test_labels) if test_labels is not None else len(held_test)  # type: ignore[arg-type]
    if n_test == 0 or len(held) == 0:
        which = "test" if n_test == 0 else "validation"
        raise DataError(f"{source}: too few images per class for a {which} split")
    return rows[kept], rows[held], held_test


