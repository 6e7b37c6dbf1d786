"""In-memory image sets: uint8 tensors, fitted to one size, normalised per batch.

Images stay uint8 (a quarter of float32's memory) and are turned into normalised floats
one batch at a time, which on a CPU costs far less than the network's step and saves the
per-sample overhead of a `DataLoader`. The trainer fetches whole batches with
`ImageSet.batch`; `__getitem__` keeps the set usable as an ordinary torch `Dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

#: A batch transform on float images in [0, 1]: ``(images, generator) -> images``.
BatchTransform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

#: A smaller image is zero-padded (not resized) when the padding is at most this fraction
#: of the target side: 28x28 Fashion-MNIST gets 2 px on each side to reach 32x32, so strokes
#: keep their pixel scale. Anything else is centre-cropped to a square and resized.
PAD_FRACTION = 0.25


def fit_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bring uint8 ``(N, C, H, W)`` images to ``size x size``.

    Non-square images are centre-cropped to a square first. A square image a little
    smaller than ``size`` (see `PAD_FRACTION`) is centred on a zero canvas; any other is
    resized (bilinear, antialiased).
    """
    height, width = images.shape[-2:]
    side = min(height, width)
    if height != width:
        top, left = (height - side) // 2, (width - side) // 2
        images = images[..., top : top + side, left : left + side]
    if side == size:
        return images.contiguous()
    if side < size and size - side <= size * PAD_FRACTION:
        before = (size - side) // 2
        after = size - side - before
        return F.pad(images, (before, after, before, after))
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    std = x.std(dim=1).clamp_min(1e-3)
    return x.mean(dim=1).float(), std.float()


@dataclass(frozen=True, eq=False)
class ImageSet(Dataset):
    """Labelled uint8 images ``(N, C, H, W)`` with the normalisation of their training set.

    ``transform`` (training sets only) augments each batch before normalisation. With
    ``index``, the set is the rows ``images[index]`` of a larger array (a memory-mapped
    prepared source, shared by its splits and by every process that maps it) and no copy
    of them is made; ``labels`` are then the labels of those rows.
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    transform: BatchTransform | None = None
    index: torch.Tensor | None = None

    def __repr__(self) -> str:
        augmented = ", augmented" if self.transform is not None else ""
        return f"ImageSet({len(self)} images of {tuple(self.shape)}{augmented})"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([index]))
        return x[0], int(y[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels at ``indices`` (augmented when the set has a
        transform; ``generator`` makes the augmentation repeatable)."""
        x = self.gather(indices).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x, generator)
        mean = self.mean.to(x.device).view(1, -1, 1, 1)
        std = self.std.to(x.device).view(1, -1, 1, 1)
        return (x - mean) / std, self.labels[indices.to(self.labels.device)]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices`` (positions in this set)."""
        if self.index is not None:
            indices = self.index[indices.to(self.index.device)]
        return self.images[indices.to(self.images.device)]

    @property
    def nbytes(self) -> int:
        """Bytes of this set's images (its rows only, for a view)."""
        c, h, w = self.shape
        return len(self) * c * h * w * self.images.element_size()

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with its tensors on ``device`` (batches are then built there); a
        view copies its own rows only."""
        if self.index is not None:
            images = self.images[self.index].to(device)
            return replace(self, images=images, labels=self.labels.to(device), index=None)
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def without_transform(self) -> ImageSet:
        return replace(self, transform=None)

    def subset(self, positions: torch.Tensor) -> ImageSet:
        """The rows at ``positions`` of this set, without augmentation, as a view (no copy)."""
        index = positions if self.index is None else self.index[positions]
        return replace(self, labels=self.labels[positions], index=index, transform=None)
