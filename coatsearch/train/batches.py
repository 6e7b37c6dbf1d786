"""The order of a trial's training batches: shuffled passes over the training set, split
into rounds of optimiser steps; its place is part of a checkpoint (`coatsearch.train.checkpoints`)."""

from __future__ import annotations

from typing import Any

import torch


class IndexStream:
    """Shuffled index batches over ``n`` images, pass after pass, each pass reshuffled (its
    order drawn when its first batch is taken). A trailing batch of one is dropped (batch
    norm cannot train on it). With ``replicas``, ``batch_size`` is the global batch and each
    replica gets its slice (a trailing batch too small for two images per replica is
    dropped). Its place (``order``, ``position``) is part of a checkpoint, so a resumed run
    takes the batches the uninterrupted one would have."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator,
                 replicas: Any = None) -> None:
        """``replicas``: a `coatsearch.train.loop.Replicas` (its ``rank`` and ``world``), or None."""
        self.n, self.batch_size, self.generator, self.replicas = n, batch_size, generator, replicas
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> IndexStream:
        return self

    def __next__(self) -> torch.Tensor:
        world = self.replicas.world if self.replicas is not None else 1
        while True:
            if self.order is None:
                self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
            while self.position < self.n:
                chunk = self.order[self.position : self.position + self.batch_size]
                self.position += self.batch_size
                if len(chunk) >= 2 * world:
                    return chunk if self.replicas is None else chunk.tensor_split(world)[self.replicas.rank]
            self.order = None


def round_lengths(steps: int, rounds: int) -> list[int]:
    """``steps`` optimiser steps split into ``rounds`` rounds as evenly as integers allow."""
    return [steps * (k + 1) // rounds - steps * k // rounds for k in range(rounds)]
