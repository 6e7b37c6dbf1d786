"""Weights for ``coatsearch train --init-from``: a coatsearch checkpoint's, or a timm
CoAtNet (MaxxViT) state dict mapped onto the matching spec (`coatsearch.export.timm`)."""

from __future__ import annotations

from pathlib import Path

import torch

from coatsearch.checkpoint import read_checkpoint
from coatsearch.spec import NetSpec


def is_timm_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has timm MaxxViT's names (``stem.conv1``, ``stages.0.blocks.0``)."""
    return any(k.startswith("stages.0.blocks.") for k in state) and "stem.conv1.weight" in state


def read_init_weights(path: str | Path, spec: NetSpec) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` as ``spec``'s network names it (a bare state dict is taken
    as ``spec``'s). `CheckpointError` when the file cannot be read; the first key or shape
    that does not fit is named when the weights load into the network trained."""
    saved = read_checkpoint(path, spec)
    state = saved.state_dict
    if is_timm_state(state):
        from coatsearch.export.timm import state_from_timm

        return state_from_timm(state, spec, str(path))
    return state
