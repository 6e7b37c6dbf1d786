"""A network cut into the units a latency profile times: the stem, every block, the head.

A unit's key says everything its latency depends on: the block's kind and settings, its
input width and side, its stride and the batch, so two networks that share a block (the
same stage settings at the same input) share its time. Its features let a profile
estimate units it never timed. They come from the analytic cost walk
(`coatsearch.analytic`), split the way time splits on a CPU at small batch: dense 1x1
convolutions, k x k convolutions, depthwise convolutions, linear layers and attention run
at different speeds per multiply-add; the elements a unit writes and the weights it reads
cost memory traffic (a 512-wide block on a 4x4 map is bound by reading its weights, not by
its multiply-adds); a downsampling block also reads its larger input (pooled shortcut,
strided first convolution). Counting them from the spec builds nothing, so predicting a
network costs about a millisecond.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from coatsearch.analytic import Ledger, _head, _stem
from coatsearch.block_kinds import BLOCK_KINDS
from coatsearch.spec import NetSpec

#: The regressors of a unit's latency, in the order of a profile's per-kind fits. Work
#: counts are millions of multiply-adds (or elements) per call at the unit's batch;
#: ``weights`` is millions of parameters (read once per call, whatever the batch).
FEATURES = ("constant", "conv1x1", "conv_kxk", "depthwise", "linear", "attention", "logits", "activations",
            "weights", "downsampled")


@dataclass
class _WorkLedger(Ledger):
    """The analytic walk with its work split into `FEATURES` (per image, weights apart)."""

    parts: Counter[str] = field(default_factory=Counter)

    def conv(self, c_in: int, c_out: int, kernel: int, side: int, groups: int = 1, bias: bool = True) -> None:
        super().conv(c_in, c_out, kernel, side, groups, bias)
        weights = c_out * (c_in // groups) * kernel * kernel
        name = "depthwise" if groups > 1 else "conv1x1" if kernel == 1 else "conv_kxk"
        self.parts[name] += weights * side * side
        self.parts["weights"] += weights

    def linear(self, tokens: int, c_in: int, c_out: int) -> None:
        super().linear(tokens, c_in, c_out)
        self.parts["linear"] += tokens * c_in * c_out
        self.parts["weights"] += c_in * c_out

    def attention(self, heads: int, tokens: int, head_dim: int, relative: bool) -> None:
        super().attention(heads, tokens, head_dim, relative)
        self.parts["attention"] += heads * tokens * tokens * 2 * head_dim
        self.parts["logits"] += heads * tokens * tokens


@dataclass(frozen=True)
class Unit:
    """One timed piece of a network: ``key`` (JSON of what its time depends on), its
    ``kind`` (``stem``, a stage kind such as ``C`` or ``T``, or ``head``), its analytic
    FLOPs at its batch and its `FEATURES`; ``module`` and ``x`` when built on a real device."""

    key: str
    kind: str
    flops: float
    features: tuple[float, ...]
    module: nn.Module | None = None
    x: torch.Tensor | None = None


def _unit(key: dict[str, Any], kind: str, ledger: _WorkLedger, batch: int, downsampled: int = 0) -> Unit:
    per_image = {**ledger.parts, "activations": ledger.activations, "downsampled": downsampled}
    values = [1.0] + [batch * per_image.get(name, 0) / 1e6 for name in FEATURES[1:]]
    values[FEATURES.index("weights")] = ledger.parts["weights"] / 1e6
    return Unit(json.dumps(key, sort_keys=True, default=str), kind, float(batch * sum(ledger.per_stage.values())),
                tuple(values))


def _walk(spec: NetSpec, batch: int) -> list[Unit]:
    """The stem, each block and the head of ``spec`` at ``batch``, from the spec alone."""
    out = []
    side = spec.image_size
    ledger = _WorkLedger()
    _stem(ledger, spec, side // spec.stem.stride)
    out.append(_unit({"unit": "stem", **spec.stem.model_dump(), "in": spec.in_channels, "side": side, "batch": batch},
                     "stem", ledger, batch))
    side //= spec.stem.stride
    width = spec.stem.channels
    for stage, grid in zip(spec.stages, spec.resolutions()):
        cost = BLOCK_KINDS[stage.kind].resolved("cost")
        for b in range(stage.blocks):
            settings = stage.model_dump(exclude={"blocks"})
            stride = settings["stride"] = stage.stride if b == 0 else 1
            c_in = width if b == 0 else stage.channels
            ledger = _WorkLedger()
            cost(ledger, stage, c_in, stride, side // stride, grid)
            key = {"unit": stage.kind, **settings, "in": c_in, "side": side, "batch": batch}
            out.append(_unit(key, stage.kind, ledger, batch, c_in * side * side if stride > 1 else 0))
            side //= stride
        width = stage.channels
    ledger = _WorkLedger()
    _head(ledger, spec, width)
    ledger.acts(width * side * side)  # the pooling reads the last feature map
    out.append(_unit({"unit": "head", "in": width, "side": side, "hidden": spec.head_hidden,
                      "classes": spec.num_classes, "batch": batch}, "head", ledger, batch))
    return out


class Head(nn.Module):
    """The network after its last stage: pooling, norm, pre-logits, classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.classifier(m.dropout(m.pre_logits(m.head_norm(x.mean((2, 3))))))  # type: ignore[operator]


def units(spec: NetSpec, batch: int, device: str | torch.device = "meta") -> list[Unit]:
    """The network's units with their features; on a real ``device`` each also carries
    its module (eval mode) and the input it sees inside the whole network."""
    found = _walk(spec, batch)
    if torch.device(device).type == "meta":
        return found
    from coatsearch.nn import build

    model = build(spec, device=device).eval()
    modules: list[nn.Module] = [model.stem, *(block for stage in model.stages for block in stage.children()),
                                Head(model)]
    inputs: dict[int, torch.Tensor] = {}
    handles = [module.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0].clone()))
               for i, module in enumerate(modules[:-1])]
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, device=device)
    with torch.inference_mode():
        inputs[len(modules) - 1] = model.forward_features(x)
    for handle in handles:
        handle.remove()
    return [replace(unit, module=module, x=inputs[i]) for i, (unit, module) in enumerate(zip(found, modules))]


def features(unit: Unit) -> list[float]:
    """The regressors of a unit's latency (`FEATURES`)."""
    return list(unit.features)


def describe(unit: Unit) -> dict[str, Any]:
    """A unit as one flat record (key, kind, FLOPs and each feature by name), to list a
    calibration's units or compare two walks of a network."""
    return {"key": unit.key, "kind": unit.kind, "flops": unit.flops, **dict(zip(FEATURES, unit.features))}
