"""FLOP, parameter and activation counting, by two independent routes.

FLOPs here are multiply-adds counted once, fvcore's convention, which the paper's GFLOPs
follow.

- ``route="traced"``: fvcore traces the model with `torch.jit.trace` and counts what it
  sees. It counts convolutions, linear layers, matmuls and (its estimate of) norms, but
  skips ``aten::scaled_dot_product_attention`` entirely; `attention_flop_handle` adds the
  attention core and the relative-bias add back. One trace yields FLOPs and activations.
- ``route="analytic"``: closed-form counts from the `NetSpec` alone
  (`coatsearch.analytic`), no tensors, well under a millisecond. Budget matching and the
  search use it; the traced route proves it (the tests compare them).

Tracing needs real tensors (`torch.jit.trace` does not run on the meta device), so the
traced route allocates the model from a spec uninitialised (`nn.Module.to_empty`): weights
that are never written cost address space rather than memory, and CoAtNet-7 (2.4B params)
traces at 224 in about 15 s with under 1 GB resident on 2 cores. `count_params` counts
parameters on the meta device and never allocates.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from coatsearch.analytic import check_image_size, tally
from coatsearch.nn.model import CoAtNet, build
from coatsearch.spec import NetSpec

Route = Literal["traced", "analytic"]

#: fvcore op names whose cost we deliberately leave out (element-wise work, pooling,
#: indexing, resizing the relative-bias table): their absence is expected, not a miss.
UNCOUNTED_BY_DESIGN = frozenset(
    {
        "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::div", "aten::sub",
        "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh", "aten::softmax",
        "aten::max_pool2d", "aten::avg_pool2d", "aten::mean", "aten::index", "aten::unsqueeze", "aten::to",
        "aten::dropout", "aten::bernoulli_", "aten::upsample_bilinear2d", "aten::expand_as",
        "aten::repeat", "aten::repeat_interleave",
    }
)

#: Key under which the traced route's handles report activations beside FLOPs.
_ACTIVATIONS = "activations"


@dataclass(frozen=True)
class Counts:
    """What a network costs per image at one image size.

    ``flops`` are multiply-adds; ``activations`` the output elements of conv, linear and
    attention layers. ``per_stage`` maps ``stem``, ``S1``.., ``head`` to FLOPs;
    ``per_stage_params`` likewise. ``by_op`` maps operator names (``conv``, ``linear``,
    ``scaled_dot_product_attention``, ``attention_bias``, ``batch_norm``, ``layer_norm``)
    to FLOPs; it and ``per_stage`` each sum to ``flops``. ``uncounted`` lists operators the
    tracer saw but did not count, beyond those skipped by design (always empty for the
    analytic route). ``route`` says which route produced the numbers.
    """

    flops: int
    params: int
    image_size: int
    activations: int = 0
    per_stage: dict[str, int] = field(default_factory=dict)
    per_stage_params: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: tuple[str, ...] = ()
    route: Route = "traced"

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def attention_flop_handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """fvcore handle for ``aten::scaled_dot_product_attention``.

    ``Q K^T`` costs ``N_q x N_k x d_qk`` and ``softmax(.) V`` costs ``N_q x N_k x d_v``
    multiply-adds per batch element and head (``scaled_dot_product_attention``); an
    additive mask, our relative bias, adds one add per logit (``attention_bias``).
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    logits = math.prod(q[:-1]) * k[-2]
    counts = Counter({"scaled_dot_product_attention": logits * (q[-1] + v[-1])})
    if len(inputs) > 3 and get_shape(inputs[3]) is not None:
        counts["attention_bias"] = logits
    return counts


def attention_activation_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """Activations of attention, as pycls counts them: the weights and the output."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    return math.prod(q[:-1]) * k[-2] + math.prod(get_shape(outputs[0]))


def _handles() -> dict[str, Callable[[list[Any], list[Any]], Counter[str]] | None]:
    """fvcore's FLOP and activation handles merged: one trace yields both.

    Each handle returns a Counter of FLOPs by operator plus the op's activations under
    ``_ACTIVATIONS``, so `by_module_and_operator` carries everything.
    """
    from fvcore.nn.activation_count import _DEFAULT_SUPPORTED_OPS as ACT_OPS
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS as FLOP_OPS

    flop_ops: dict[str, Any] = {
        **FLOP_OPS, "aten::scaled_dot_product_attention": attention_flop_handle
    }
    act_ops: dict[str, Any] = {
        **ACT_OPS, "aten::scaled_dot_product_attention": attention_activation_handle
    }

    def merged(kind: str) -> Callable[[list[Any], list[Any]], Counter[str]]:
        flop_handle, act_handle = flop_ops.get(kind), act_ops.get(kind)

        def handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
            counts: Counter[str] = Counter()
            if flop_handle is not None:
                value = flop_handle(inputs, outputs)
                counts.update(value if isinstance(value, Counter) else {kind.split("::")[-1]: value})
            if act_handle is not None:
                value = act_handle(inputs, outputs)
                counts[_ACTIVATIONS] += sum(value.values()) if isinstance(value, Counter) else value
            return counts

        return handle

    handles: dict[str, Any] = {kind: merged(kind) for kind in {**flop_ops, **act_ops}}
    # Resizing the relative-bias table (only at a new resolution) prepares weights; it is
    # not per-image work, and the analytic route does not count it either.
    handles["aten::upsample_bilinear2d"] = None
    return handles


def count_params(spec: NetSpec) -> int:
    """Parameters of the network a spec describes, without allocating it (meta device)."""
    return sum(p.numel() for p in build(spec, device="meta").parameters())


def count_analytic(spec: NetSpec, image_size: int | None = None) -> Counts:
    """Closed-form counts from the spec alone (see `coatsearch.analytic`); no tensors."""
    ledger = tally(spec, image_size)
    return Counts(
        flops=sum(ledger.by_op.values()),
        params=sum(ledger.per_stage_params.values()),
        image_size=image_size or spec.image_size,
        activations=ledger.activations,
        per_stage=dict(ledger.per_stage),
        per_stage_params=dict(ledger.per_stage_params),
        by_op=dict(ledger.by_op),
        route="analytic",
    )


def _report_rows(model: CoAtNet) -> dict[str, str]:
    """Module-name prefix -> report row (``stages.2`` -> ``S3``), rows in network order."""
    groups = {"stem": "stem"}
    for i, name in enumerate(model.spec.stage_names):
        groups[f"stages.{i}"] = name
    groups.update({"head_norm": "head", "pre_logits": "head", "classifier": "head"})
    return groups


def count_traced(model: CoAtNet, image_size: int | None = None, batch: int = 1) -> Counts:
    """Trace ``model`` with fvcore (attention included) and count it."""
    from fvcore.nn.jit_analysis import JitModelAnalysis

    spec = model.spec
    size = image_size or spec.image_size
    check_image_size(spec, size)
    device = next(model.parameters()).device
    x = torch.zeros(batch, spec.in_channels, size, size, device=device)

    was_training = model.training
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    model.eval()
    try:
        fvcore_logger.setLevel(logging.ERROR)
        analysis = JitModelAnalysis(model, x).set_op_handle(**_handles())
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            by_module = analysis.by_module_and_operator()
            unsupported = analysis.unsupported_ops()
    finally:
        fvcore_logger.setLevel(level)
        model.train(was_training)

    def flops_of(module: str) -> int:
        counts = by_module.get(module, Counter())
        return int(sum(v for op, v in counts.items() if op != _ACTIVATIONS))

    rows = _report_rows(model)
    per_stage = dict.fromkeys(rows.values(), 0)
    per_stage_params = dict.fromkeys(per_stage, 0)
    for prefix, row in rows.items():
        per_stage[row] += flops_of(prefix) // batch
    for name, param in model.named_parameters():
        per_stage_params[rows[_row_prefix(name)]] += param.numel()
    total = by_module[""]
    return Counts(
        flops=flops_of("") // batch,
        params=sum(per_stage_params.values()),
        image_size=size,
        activations=int(total.get(_ACTIVATIONS, 0)) // batch,
        per_stage=per_stage,
        per_stage_params=per_stage_params,
        by_op={op: int(v) // batch for op, v in total.items() if op != _ACTIVATIONS},
        uncounted=tuple(sorted(op for op in unsupported if op not in UNCOUNTED_BY_DESIGN)),
        route="traced",
    )


def _row_prefix(param_name: str) -> str:
    """``stages.2.0.attn.qkv.weight`` -> ``stages.2``; ``stem.conv1.weight`` -> ``stem``."""
    parts = param_name.split(".")
    return ".".join(parts[:2]) if parts[0] == "stages" else parts[0]


def count(
    spec_or_model: NetSpec | nn.Module,
    image_size: int | None = None,
    route: Route = "traced",
    batch: int = 1,
) -> Counts:
    """Count FLOPs, parameters and activations of a spec or `CoAtNet`, per image.

    ``route="traced"`` traces the network with fvcore (a spec is built uninitialised for
    it); ``route="analytic"`` uses the closed-form counts. Both count the same operators.
    """
    if isinstance(spec_or_model, NetSpec):
        spec, model = spec_or_model, None
    elif isinstance(spec_or_model, CoAtNet):
        spec, model = spec_or_model.spec, spec_or_model
    else:
        raise TypeError(f"count: expected a NetSpec or CoAtNet, got {type(spec_or_model).__name__}")
    if route == "analytic":
        return count_analytic(spec, image_size)
    if route != "traced":
        raise ValueError(f"route: expected 'traced' or 'analytic', got {route!r}")
    if model is None:
        # Tracing needs shapes, not values: skip the (slow) weight initialisation.
        model = build(spec, device="meta").to_empty(device="cpu")
    return count_traced(model, image_size, batch)
