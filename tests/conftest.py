"""Shared fixtures: tiny specs that build and run in milliseconds on a CPU."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import pytest
import torch

from coatsearch.spec import NetSpec

if TYPE_CHECKING:
    from coatsearch.flops import Counts

torch.set_num_threads(2)


def tiny_spec(layout: str = "C-C-T-T", image_size: int = 32, **fields) -> NetSpec:
    """A narrow network of the given layout, for fast structural tests."""
    n = len(layout.split("-"))
    blocks = [2] + [1] * n
    channels = [16] + [16 * 2**i for i in range(n)]
    channels = [max(32, c) if i > 0 else c for i, c in enumerate(channels)]
    return NetSpec.from_layout(layout, blocks, channels, image_size=image_size, num_classes=10, **fields)


@pytest.fixture
def small_spec() -> NetSpec:
    return tiny_spec()


@pytest.fixture(scope="session")
def traced_count() -> Callable[..., Counts]:
    """`count` by the traced route, memoised for the session: each preset is traced once."""
    from coatsearch.flops import count

    @functools.lru_cache(maxsize=None)
    def traced(spec: NetSpec, image_size: int | None = None) -> Counts:
        return count(spec, image_size, route="traced")

    return traced
