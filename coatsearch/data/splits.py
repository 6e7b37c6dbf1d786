"""Deterministic stratified splits and subsets.

Every class keeps its share in each split, so a small validation split or a data-size
study's subsample never loses a class by chance. Indices come back sorted: the same seed
gives the same split on any machine.
"""

from __future__ import annotations

import torch


def _class_members(labels: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """Indices of each class, shuffled by ``generator``."""
    members = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        members.append(idx[torch.randperm(len(idx), generator=generator)])
    return members


def stratified_split(
    labels: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_out)`` indices, holding out about ``fraction`` of every class.

    A class of two or more images gives at least one to each side; a lone image stays kept.
    """
    kept, held = [], []
    for idx in _class_members(labels, generator):
        n = len(idx)
        take = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        held.append(idx[:take])
        kept.append(idx[take:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def stratified_subset(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` indices with the class proportions of ``labels`` (largest remainders)."""
    members = _class_members(labels, generator)
    total = len(labels)
    quotas = [size * len(idx) / total for idx in members]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(members)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: size - sum(counts)]:
        counts[i] += 1
    return torch.cat([idx[:k] for idx, k in zip(members, counts)]).sort().values
