"""FLOP and parameter counting.

FLOPs here are multiply-adds counted once, fvcore's convention, which the paper's GFLOPs
follow. fvcore traces the model with `torch.jit.trace` and counts convolutions, linear
layers and matmuls exactly, but skips ``aten::scaled_dot_product_attention`` entirely;
`attention_flop_handle` adds it back: ``B x heads x N_q x N_k x (d_qk + d_v)``.

Tracing needs real tensors (`torch.jit.trace` does not run on the meta device), so the
traced route allocates the model once; `count_params` counts parameters on the meta
device and never allocates, for billion-parameter presets.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from coatsearch.nn.model import CoAtNet, build
from coatsearch.spec import NetSpec

#: fvcore op names whose cost we deliberately leave out (element-wise work, pooling,
#: normalisation statistics, indexing): their absence is expected, not a miss.
UNCOUNTED_BY_DESIGN = frozenset(
    {
        "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::div", "aten::sub",
        "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh", "aten::softmax",
        "aten::max_pool2d", "aten::mean", "aten::index", "aten::unsqueeze", "aten::to",
        "aten::layer_norm", "aten::batch_norm", "aten::dropout", "aten::bernoulli_",
        "aten::upsample_bilinear2d", "aten::expand_as", "aten::repeat",
        "aten::repeat_interleave",
    }
)


@dataclass(frozen=True)
class Counts:
    """What a network costs at one image size.

    ``per_stage`` maps ``stem``, ``S1``.., ``head`` to FLOPs; ``per_stage_params`` likewise.
    ``by_op`` maps fvcore operator names to FLOPs. ``uncounted`` lists operators the tracer
    saw but did not count (beyond those skipped by design).
    """

    flops: int
    params: int
    image_size: int
    per_stage: dict[str, int] = field(default_factory=dict)
    per_stage_params: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def attention_flop_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``.

    ``Q K^T`` costs ``N_q x N_k x d_qk`` and ``softmax(.) V`` costs ``N_q x N_k x d_v``
    multiply-adds per batch element and head.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    *lead, n_q, d_qk = q
    n_k = k[-2]
    d_v = v[-1]
    batch_heads = 1
    for dim in lead:
        batch_heads *= dim
    return batch_heads * n_q * n_k * (d_qk + d_v)


def count_params(spec: NetSpec) -> int:
    """Parameters of the network a spec describes, without allocating it (meta device)."""
    return sum(p.numel() for p in build(spec, device="meta").parameters())


def _module_groups(model: CoAtNet) -> dict[str, str]:
    """Module-name prefix -> report row (``stages.2`` -> ``S3``)."""
    groups = {"stem": "stem", "head_norm": "head", "pre_logits": "head", "classifier": "head"}
    for i, name in enumerate(model.spec.stage_names):
        groups[f"stages.{i}"] = name
    return groups


def count(
    spec_or_model: NetSpec | nn.Module, image_size: int | None = None, batch: int = 1
) -> Counts:
    """Count FLOPs (fvcore, attention included) and parameters of a spec or `CoAtNet`."""
    from fvcore.nn import FlopCountAnalysis

    if isinstance(spec_or_model, NetSpec):
        model = build(spec_or_model)
    elif isinstance(spec_or_model, CoAtNet):
        model = spec_or_model
    else:
        raise TypeError(f"count: expected a NetSpec or CoAtNet, got {type(spec_or_model).__name__}")
    spec = model.spec
    size = image_size or spec.image_size
    device = next(model.parameters()).device
    x = torch.zeros(batch, spec.in_channels, size, size, device=device)

    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", attention_flop_handle)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        fvcore_logger = logging.getLogger("fvcore")
        level = fvcore_logger.level
        fvcore_logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            total = int(analysis.total())
            by_module = analysis.by_module()
            by_op = {op: int(v) for op, v in analysis.by_operator().items()}
            unsupported = analysis.unsupported_ops()
        fvcore_logger.setLevel(level)
    finally:
        model.train(was_training)

    groups = _module_groups(model)
    per_stage = {row: 0 for row in dict.fromkeys(groups.values())}
    per_stage_params = dict.fromkeys(per_stage, 0)
    for prefix, row in groups.items():
        per_stage[row] += int(by_module.get(prefix, 0))
    for name, param in model.named_parameters():
        for prefix, row in groups.items():
            if name.startswith(prefix + "."):
                per_stage_params[row] += param.numel()
                break
    uncounted = tuple(sorted(op for op in unsupported if op not in UNCOUNTED_BY_DESIGN))
    params = sum(p.numel() for p in model.parameters())
    return Counts(
        flops=total // batch,
        params=params,
        image_size=size,
        per_stage={k: v // batch for k, v in per_stage.items()},
        per_stage_params=per_stage_params,
        by_op={k: v // batch for k, v in by_op.items()},
        uncounted=uncounted,
    )
