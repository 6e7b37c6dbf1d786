"""Move a trained network to another resolution for fine-tuning, as the paper does at 384.

`convert(state_dict, spec, image_size)` returns the spec at the new image size and a
state dict for it whose relative-bias tables are enlarged (or shrunk) to the new grids
with `resize_table`; every other tensor is unchanged. Fine-tuning the converted model then
learns the full ``(2H'-1) x (2W'-1)`` table, rather than resizing the old one on every
forward.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from coatsearch.nn.attention import resize_table
from coatsearch.nn.model import build
from coatsearch.spec import NetSpec, SpecError


def convert(state_dict: Mapping[str, torch.Tensor], spec: NetSpec, image_size: int) -> tuple[NetSpec, dict[str, torch.Tensor]]:
    """``(spec at image_size, state dict for it)``; `SpecError` when the size does not fit."""
    new_spec = spec.replace(image_size=image_size)  # validated: divisible by the total stride
    target = build(new_spec).state_dict()
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise SpecError(f"state_dict: does not match the spec ({'missing' if missing else 'unexpected'} {first!r})")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name.endswith("rel_bias.table") and tensor.shape != target[name].shape:
            out[name] = resize_table(tensor.detach().float(), tuple(target[name].shape[1:])).to(tensor.dtype).contiguous()
        else:
            out[name] = tensor
    return new_spec, out
