"""Feeding batches to the training loop: in the loop's own thread or from loader workers.

A set (`ImageSet`, in memory or mapped; `StreamSet`, files) gives normalised batches with
``batch(indices, generator)``. `Feed` turns a sequence of index batches into batches:

- ``workers == 0``: each batch is gathered (and augmented) in the calling thread with the
  loop's generator, exactly as the loop always did. Cheapest for in-memory data and
  light augmentation: gathering a batch from a map costs far less than the step.
- ``workers > 0``: a `DataLoader` with persistent workers builds the batches ahead (file
  decoding, RandAugment on the CPU while the model runs on an accelerator). The batch
  order still comes from the loop's generator, and each batch's augmentation from a seed
  drawn from it, so a run is repeatable whatever the number of workers.

With ``pin``, batches come in pinned memory so that the loop's copy to the device is
non-blocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from coatsearch.host import available_cpus

Batch = tuple[torch.Tensor, torch.Tensor]


class _Keys(Sampler):
    """The keys of the current pass: ``(indices, seed)`` per batch (set before each pass)."""

    def __init__(self) -> None:
        self.keys: list[tuple[torch.Tensor, int | None]] = []

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int | None]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Batches(Dataset):
    """Batch ``(indices, seed)`` of a set, built in a loader worker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[torch.Tensor, int | None]) -> Batch:  # type: ignore[override]
        indices, seed = key
        from coatsearch.data.errors import DataError

        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        try:
            x, y = self.dataset.batch(indices, generator)
        except DataError as exc:  # raised again by the loop, as one line (not wrapped)
            return torch.empty(0), str(exc)  # type: ignore[return-value]
        return x.contiguous(), y

    def __len__(self) -> int:
        return len(self.dataset)


def auto_workers(dataset: Any, device: torch.device, on_device: bool) -> int:
    """Loader workers when the loop's thread would starve the model: files to decode, or
    RandAugment on the host for an accelerator. None otherwise."""
    from coatsearch.data.augment import crop_flip_randaugment

    cpus = available_cpus()
    if getattr(dataset, "streamed", False):
        return max(1, min(8, cpus - 1))
    heavy = getattr(dataset, "transform", None) is crop_flip_randaugment
    if heavy and device.type != "cpu" and not on_device:
        return max(1, min(4, cpus - 1))
    return 0


class Feed:
    """Batches of one set for the loop (see the module docstring)."""

    def __init__(self, dataset: Any, workers: int = 0, pin: bool = False) -> None:
        self.dataset, self.workers, self.pin = dataset, workers, pin
        self._keys = _Keys()
        self._loader: DataLoader | None = None

    def _make_loader(self) -> DataLoader:
        return DataLoader(
            _Batches(self.dataset), batch_size=None, sampler=self._keys, num_workers=self.workers,
            persistent_workers=True, pin_memory=self.pin, prefetch_factor=4,
        )

    def batches(self, index_batches: Iterable[torch.Tensor], generator: torch.Generator | None = None) -> Iterator[Batch]:
        """The batches at ``index_batches`` (lazily consumed when there are no workers, so
        draws from ``generator`` interleave with the loop's as they always did)."""
        if self.workers == 0:
            for indices in index_batches:
                x, y = self.dataset.batch(indices, generator)
                yield (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)
            return
        planned: Sequence[torch.Tensor] = list(index_batches)
        seeds: list[int | None] = [None] * len(planned)
        if generator is not None and getattr(self.dataset, "transform", None) is not None:
            seeds = torch.randint(0, 2**62, (len(planned),), generator=generator).tolist()
        self._keys.keys = list(zip(planned, seeds))
        if not planned:
            return
        if self._loader is None:
            self._loader = self._make_loader()
        for x, y in self._loader:
            if isinstance(y, str):
                from coatsearch.data.errors import DataError

                raise DataError(y)
            yield x, y

    def close(self) -> None:
        """End the loader's workers now (rather than when the feed is collected)."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def place(dataset: Any, device: torch.device, fraction: float = 0.25, budget: int | None = None) -> tuple[Any, bool]:
    """The set on ``device`` when it should live there, and whether it does.

    On CUDA a set moves when its images take at most ``fraction`` of the free device
    memory (``budget`` bytes, when given, instead); then batches are gathered and
    augmented there. A larger or streamed set stays on the host (batches are pinned and
    copied non-blocking). XLA and MPS sets move whole, as they always did.
    """
    if device.type == "cpu" or getattr(dataset, "streamed", False):
        return dataset, False
    if device.type == "cuda":
        if budget is None:
            free, _ = torch.cuda.mem_get_info(device)
            budget = int(free * fraction)
        if dataset.nbytes > budget:
            return dataset, False
    return dataset.to(device), True
