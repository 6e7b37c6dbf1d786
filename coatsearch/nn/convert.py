"""Move a trained network to another resolution for fine-tuning, as the paper does at 384.

`convert(state_dict, spec, image_size)` returns the spec at the new image size and a
state dict for it whose relative-bias tables are enlarged (or shrunk) to the new grids
with `resize_table`; every other tensor is unchanged. Fine-tuning the converted model then
learns the full ``(2H'-1) x (2W'-1)`` table, rather than resizing the old one on every
forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from coatsearch.errors import CoatsearchError, first_line
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


def convert_checkpoint(checkpoint: Path, image_size: int, spec: NetSpec | None, output: Path) -> tuple[NetSpec, int]:
    """Convert a torch file (a bare state dict, or ``{'spec', 'state_dict'}``) to ``image_size``
    and save ``{'spec', 'state_dict'}`` at ``output``; the new spec and how many bias tables
    changed size. ``spec`` names the network of a bare state dict (and overrides a saved one).
    Unreadable or unwritable files are one-line `CoatsearchError`s."""
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SpecError(f"{checkpoint}: not a readable torch checkpoint ({first_line(exc)})") from None
    if isinstance(saved, dict) and "state_dict" in saved:
        state, net = saved["state_dict"], NetSpec.from_dict(saved["spec"]) if spec is None else spec
    elif spec is not None:
        state, net = saved, spec
    else:
        raise SpecError(f"{checkpoint}: a bare state_dict needs --spec (the network it belongs to)")
    new_spec, new_state = convert(state, net, image_size)
    try:
        torch.save({"spec": new_spec.to_dict(), "state_dict": new_state}, output)
    except (OSError, RuntimeError) as exc:  # torch reports a missing folder as a RuntimeError
        raise CoatsearchError(f"-o {output}: cannot write ({first_line(exc)})") from None
    return new_spec, sum(1 for k in new_state if k.endswith("rel_bias.table") and new_state[k].shape != state[k].shape)
