"""A network cut into the units a latency profile times: the stem, every block, the head.

A unit's key says everything its latency depends on: the block's kind and settings, its
input width and side, its stride and the batch, so two networks that share a block (the
same stage settings at the same input) share its time. Its features (FLOPs and tensor
elements, counted by `torch.utils.flop_counter` on the meta device, so no memory is
used) let a profile estimate units it never timed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from coatsearch.nn import build
from coatsearch.nn.model import CoAtNet
from coatsearch.spec import NetSpec


@dataclass(frozen=True)
class Unit:
    """One timed piece of a network: ``key`` (JSON of what its time depends on), its
    ``kind`` (``stem``, a stage kind such as ``C`` or ``T``, or ``head``), FLOPs and the
    elements of its input and output; ``module`` and ``x`` when built on a real device."""

    key: str
    kind: str
    flops: float
    elements: float
    module: nn.Module | None = None
    x: torch.Tensor | None = None


class Head(nn.Module):
    """The network after its last stage: pooling, norm, pre-logits, classifier."""

    def __init__(self, model: CoAtNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.classifier(m.dropout(m.pre_logits(m.head_norm(x.mean((2, 3))))))


def _pieces(model: CoAtNet, spec: NetSpec, batch: int) -> list[tuple[str, str, nn.Module]]:
    """``(key, kind, module)`` of the stem, each block and the head, in order."""
    out: list[tuple[str, str, nn.Module]] = []
    side = spec.image_size
    out.append((json.dumps({"unit": "stem", **spec.stem.model_dump(), "in": spec.in_channels, "side": side,
                            "batch": batch}, sort_keys=True, default=str), "stem", model.stem))
    side //= spec.stem.stride
    width = spec.stem.channels
    for stage, blocks in zip(spec.stages, model.stages):
        for b, block in enumerate(list(blocks.children())):
            settings = stage.model_dump(exclude={"blocks"})
            settings["stride"] = stage.stride if b == 0 else 1
            key = {"unit": stage.kind, **settings, "in": width if b == 0 else stage.channels, "side": side,
                   "batch": batch}
            out.append((json.dumps(key, sort_keys=True, default=str), stage.kind, block))
            side //= settings["stride"]
        width = stage.channels
    out.append((json.dumps({"unit": "head", "in": width, "side": side, "hidden": spec.head_hidden,
                            "classes": spec.num_classes, "batch": batch}, sort_keys=True), "head", Head(model)))
    return out


def units(spec: NetSpec, batch: int, device: str | torch.device = "meta") -> list[Unit]:
    """The network's units with their features; on a real ``device`` each also carries
    its module (eval mode) and the input it sees inside the whole network."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(spec, device=device).eval()
    pieces = _pieces(model, spec, batch)
    inputs: dict[int, torch.Tensor] = {}
    handles = [module.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0]))
               for i, (_, _, module) in enumerate(pieces[:-1])]
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, device=device)
    with torch.inference_mode():
        features = model.forward_features(x)
    for handle in handles:
        handle.remove()
    inputs[len(pieces) - 1] = features
    out = []
    for i, (key, kind, module) in enumerate(pieces):
        given = inputs[i]
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            y = module(given)
        real = given.device.type != "meta"
        out.append(Unit(key, kind, float(counter.get_total_flops()) / 2, float(given.numel() + y.numel()),
                        module if real else None, given.clone() if real else None))
    return out


def features(unit: Unit) -> list[float]:
    """The regressors of a unit's latency: a constant, its multiply-adds and its elements."""
    return [1.0, unit.flops / 1e6, unit.elements / 1e6]


def describe(unit: Unit) -> dict[str, Any]:
    return {"key": unit.key, "kind": unit.kind, "flops": unit.flops, "elements": unit.elements}
