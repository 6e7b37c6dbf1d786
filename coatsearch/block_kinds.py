"""Block kinds: what a stage of each kind is built from, what it costs, and what its spec
must satisfy, registered together (as pycls keeps a block's complexity beside the block).

A `BlockKind` names

- ``module``: ``(stage, in_channels, stride, grid, drop_path, eps) -> nn.Module``, one block
  of the stage (``grid``: the stage's token grid, ``(side, side)``);
- ``cost``: ``(ledger, stage, in_channels, stride, side, grid) -> None``, the same block's
  FLOPs, params and activations entered in an `coatsearch.analytic.Ledger`;
- ``check``: ``(stage) -> str | None``, what is wrong with a stage of this kind (None: fine);
- ``attends``: an attention kind: it has heads of ``head_dim`` (its width is a multiple of
  it), and the family puts every attention stage after the convolution stages.

``module`` and ``cost`` may be ``"module:attribute"`` references, imported on first use, so
the spec validates a layout without loading torch. A new kind joins with
``BLOCK_KINDS.register("X", BlockKind(...))`` and is then a layout letter like ``C`` and ``T``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coatsearch.registry import Registry


@dataclass(frozen=True)
class BlockKind:
    """One kind of block: its module, its analytic cost and its spec constraints."""

    module: Callable[..., Any] | str
    cost: Callable[..., None] | str
    check: Callable[[Any], str | None] | None = None
    attends: bool = False

    def resolved(self, part: str) -> Callable[..., Any]:
        """``module`` or ``cost`` as a callable (a reference is imported, once)."""
        return _resolve(getattr(self, part))


@functools.cache
def _resolve(entry: Callable[..., Any] | str) -> Callable[..., Any]:
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
    return entry


def _heads_divide(stage: Any) -> str | None:
    if stage.channels % stage.head_dim:
        return f"channels: {stage.channels} is not divisible by head_dim {stage.head_dim}"
    return None


#: Every block kind, by its layout letter.
BLOCK_KINDS: Registry[BlockKind] = Registry("stage kind")
BLOCK_KINDS.register("C", BlockKind(module="coatsearch.nn.model:mbconv_block", cost="coatsearch.analytic:mbconv_cost"))
BLOCK_KINDS.register("T", BlockKind(module="coatsearch.nn.model:transformer_block",
                                    cost="coatsearch.analytic:transformer_cost", check=_heads_divide, attends=True))


def attends(kind: str) -> bool:
    """Whether stages of ``kind`` are attention stages (False for an unknown kind)."""
    return kind in BLOCK_KINDS and BLOCK_KINDS[kind].attends
