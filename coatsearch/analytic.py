"""Closed-form cost of a network, computed from its `NetSpec` alone.

Why: a search space filters thousands of candidates by budget before any is trained, and
budget matching evaluates dozens of scaled specs per call. Tracing a network costs
0.1-2 s; these formulas cost well under a millisecond and allocate nothing.

They count exactly what the traced route (`coatsearch.flops`, fvcore plus our attention
handle) counts, operator by operator, so the two routes agree to the unit and the tests
prove it on every preset and on random specs. Per image (batch 1), with ``side`` the output
feature-map side and ``N`` the tokens an attention layer sees:

- ``conv``: ``C_out x C_in/groups x k x k x side^2`` multiply-adds (bias not counted)
- ``linear``: ``tokens x C_in x C_out``
- ``scaled_dot_product_attention``: ``heads x N x N x 2 x head_dim`` (``QK^T`` and ``AV``)
- ``attention_bias``: ``heads x N x N``, the relative-bias add on the logits
- ``batch_norm``: 2 x elements (inference: scale and shift); ``layer_norm``: 5 x elements
  (fvcore's estimate for an affine norm)

Activations are the output elements of every conv, linear and attention layer; attention
counts its weights (``heads x N x N``) and its output, as pycls does.

Element-wise work (activations, residual adds, SE gating, softmax), pooling and the bias
gather are not counted, in either route.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from coatsearch.block_kinds import BLOCK_KINDS
from coatsearch.spec import NetSpec, SpecError, StageSpec, ffn_hidden, mbconv_hidden, mbconv_se_width

#: fvcore's FLOP estimate per element of an affine norm at inference.
NORM_FLOPS_PER_ELEMENT = {"batch": 2, "layer": 5}


@dataclass
class Ledger:
    """Running totals while walking a network: FLOPs per report row and per operator."""

    per_stage: Counter[str] = field(default_factory=Counter)
    per_stage_params: Counter[str] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)
    activations: int = 0
    row: str = "stem"
    times: int = 1

    @contextmanager
    def repeated(self, times: int) -> Iterator[None]:
        """Everything recorded inside costs ``times`` over (identical repeated blocks)."""
        before = self.times
        self.times = before * times
        try:
            yield
        finally:
            self.times = before

    def flops(self, op: str, value: int) -> None:
        self.per_stage[self.row] += value * self.times
        self.by_op[op] += value * self.times

    def params(self, value: int) -> None:
        self.per_stage_params[self.row] += value * self.times

    def acts(self, value: int) -> None:
        self.activations += value * self.times

    # ------------------------------------------------------------------ layers
    def conv(
        self, c_in: int, c_out: int, kernel: int, side: int, groups: int = 1, bias: bool = True
    ) -> None:
        weights = c_out * (c_in // groups) * kernel * kernel
        self.flops("conv", weights * side * side)
        self.acts(c_out * side * side)
        self.params(weights + (c_out if bias else 0))

    def linear(self, tokens: int, c_in: int, c_out: int) -> None:
        self.flops("linear", tokens * c_in * c_out)
        self.acts(tokens * c_out)
        self.params(c_in * c_out + c_out)

    def norm(self, kind: str, channels: int, elements: int) -> None:
        self.flops(f"{kind}_norm", NORM_FLOPS_PER_ELEMENT[kind] * elements)
        self.params(2 * channels)

    def attention(self, heads: int, tokens: int, head_dim: int, relative: bool) -> None:
        logits = heads * tokens * tokens
        self.flops("scaled_dot_product_attention", logits * 2 * head_dim)
        if relative:
            self.flops("attention_bias", logits)
        self.acts(logits + heads * tokens * head_dim)


def _shortcut(ledger: Ledger, c_in: int, c_out: int, side: int) -> None:
    """``Proj(Pool(x))``: pooling is free; the 1x1 projection only when widths differ."""
    if c_in != c_out:
        ledger.conv(c_in, c_out, 1, side)


def _stem(ledger: Ledger, spec: NetSpec, side: int) -> None:
    stem = spec.stem
    if stem.kind == "patch":
        ledger.conv(spec.in_channels, stem.channels, stem.stride, side)
        ledger.norm(stem.norm, stem.channels, stem.channels * side * side)
        return
    ledger.conv(spec.in_channels, stem.channels, 3, side, bias=False)
    ledger.norm(stem.norm, stem.channels, stem.channels * side * side)
    ledger.conv(stem.channels, stem.channels, 3, side, bias=stem.bias)


def mbconv_cost(ledger: Ledger, stage: StageSpec, c_in: int, stride: int, side: int, grid: int) -> None:
    """A ``C`` block's cost (``grid`` is unused: convolutions have no token grid)."""
    c_out = stage.channels
    hidden = mbconv_hidden(c_out, stage.expansion)
    _shortcut(ledger, c_in, c_out, side)
    side_in = side * stride
    # stride_mode "dw": the expansion runs at the input side, the depthwise conv strides
    side_expand = side if stage.stride_mode == "1x1" else side_in
    ledger.norm(stage.norm, c_in, c_in * side_in * side_in)
    ledger.conv(c_in, hidden, 1, side_expand, bias=False)
    ledger.norm(stage.norm, hidden, hidden * side_expand * side_expand)
    ledger.conv(hidden, hidden, 3, side, groups=hidden, bias=False)
    ledger.norm(stage.norm, hidden, hidden * side * side)
    reduced = mbconv_se_width(c_in, stage.se_ratio, c_out, stage.se_base)
    if reduced:
        ledger.conv(hidden, reduced, 1, 1)
        ledger.conv(reduced, hidden, 1, 1)
    ledger.conv(hidden, c_out, 1, side)


def transformer_cost(ledger: Ledger, stage: StageSpec, c_in: int, stride: int, side: int, grid: int) -> None:
    """A ``T`` block's cost; ``grid`` sizes its relative-bias table."""
    c_out = stage.channels
    tokens = side * side
    _shortcut(ledger, c_in, c_out, side)
    side_in = side * stride
    ledger.norm("layer", c_in, c_in * side_in * side_in)
    ledger.linear(tokens, c_in, 3 * c_out)
    relative = stage.attention == "relative"
    ledger.attention(stage.heads, tokens, stage.head_dim, relative)
    if relative:
        ledger.params(stage.heads * (2 * grid - 1) ** 2)
    ledger.linear(tokens, c_out, c_out)
    ledger.norm("layer", c_out, c_out * tokens)
    hidden = ffn_hidden(c_out, stage.expansion)
    ledger.linear(tokens, c_out, hidden)
    ledger.linear(tokens, hidden, c_out)


def _head(ledger: Ledger, spec: NetSpec, width: int) -> None:
    ledger.norm("layer", width, width)
    if spec.head_hidden:
        ledger.linear(1, width, spec.head_hidden)
        width = spec.head_hidden
    ledger.linear(1, width, spec.num_classes)


def check_image_size(spec: NetSpec, image_size: int) -> None:
    """Raise `SpecError` when the network cannot run at ``image_size``."""
    if image_size <= 0 or image_size % spec.total_stride:
        raise SpecError(
            f"image_size: {image_size} is not a positive multiple of the total stride "
            f"{spec.total_stride}"
        )


def tally(spec: NetSpec, image_size: int | None = None) -> Ledger:
    """Walk the network a spec describes at ``image_size`` and total its cost.

    Relative-bias tables are sized for the spec's own image size (as `build` makes them);
    at another size the model resizes them per forward, which is not counted.
    """
    size = image_size or spec.image_size
    if size != spec.image_size:
        check_image_size(spec, size)
    ledger = Ledger()
    _stem(ledger, spec, size // spec.stem.stride)
    width = spec.stem.channels
    grids = spec.resolutions()
    site = spec.position_site()
    for index, (name, stage, side, grid) in enumerate(zip(spec.stage_names, spec.stages, spec.resolutions(size),
                                                          grids)):
        ledger.row = name
        if site is not None and index == site[0]:
            ledger.params(site[1] * site[2] ** 2)  # an addition: no multiply-adds
        block = BLOCK_KINDS[stage.kind].resolved("cost")  # the kind's cost, registered beside its module
        block(ledger, stage, width, stage.stride, side, grid)
        if stage.blocks > 1:
            with ledger.repeated(stage.blocks - 1):
                block(ledger, stage, stage.channels, 1, side, grid)
        width = stage.channels
    ledger.row = "head"
    _head(ledger, spec, width)
    return ledger
