"""Declarative, validated description of a CoAtNet-family network.

A `NetSpec` is the single source of truth for a network: the model builder
(`coatsearch.build`), the counters (`coatsearch.count`), budget matching and the
search spaces all read it and never the module. It is immutable, so a sampled or
scaled spec can be hashed, compared and written to a results table as-is.

Vocabulary (Dai et al., 2021):
- S0 is the stem: two 3x3 convolutions (the first strided) or a ViT patch embedding.
- S1..Sn are stages. Each has a kind, ``C`` (MBConv) or ``T`` (Transformer with
  relative attention); the first block of a stage with stride 2 downsamples.
- A "layout" string names the stage kinds, e.g. ``C-C-T-T``.
- A stage with stride 1 continues the resolution of the one before it. That is how
  CoAtNet-6/7's mixed S3 (MBConv blocks, then Transformer blocks at a new width) is
  written: two stage entries, the second with ``stride: 1``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coatsearch.block_kinds import BLOCK_KINDS, attends
from coatsearch.errors import CoatsearchError
from coatsearch.files import load_yaml
from coatsearch.validation import FieldError, validate_mapping

#: A stage kind: a letter of `coatsearch.block_kinds.BLOCK_KINDS` (``C``, ``T`` and any registered).
StageKind = str
NormKind = Literal["batch", "layer"]
AttentionKind = Literal["relative", "plain"]
StemKind = Literal["conv", "patch"]
StrideMode = Literal["1x1", "dw"]
PoolKind = Literal["max", "avg"]
SeBase = Literal["in", "out"]

#: Below this image size `from_layout` uses a stride-1 stem, as CIFAR ResNets do, so
#: that the last of four stride-2 stages still sees at least 2x2 tokens.
SMALL_IMAGE_MAX = 64

_STAGE_PATH = re.compile(r"stages\[(\d+)\]\.([a-z_]+)")


#: Channels are multiples of this (and of head_dim in T stages): hardware-friendly widths.
CHANNEL_MULTIPLE = 8


def make_divisible(value: float, multiple: int) -> int:
    """The nearest positive multiple of ``multiple`` (an exact half rounds up, so the result
    is monotone in ``value``). The one rounding rule for every width and image size that
    scaling, budgets and search knobs produce."""
    return max(multiple, int(value / multiple + 0.5) * multiple)


def mbconv_hidden(out_channels: int, expansion: float) -> int:
    """Width of the MBConv inverted bottleneck."""
    return max(1, round(out_channels * expansion))


def mbconv_se_width(in_channels: int, se_ratio: float, out_channels: int | None = None, base: str = "in") -> int:
    """Width of the squeeze-excitation bottleneck (0 disables SE): ``se_ratio`` times the
    block's input width (``base="in"``, EfficientNet's) or output width (``"out"``, timm's)."""
    width = out_channels if base == "out" and out_channels is not None else in_channels
    return max(1, int(width * se_ratio)) if se_ratio > 0 else 0


def ffn_hidden(channels: int, expansion: float) -> int:
    """Width of the Transformer feed-forward layer."""
    return max(1, round(channels * expansion))


class SpecError(CoatsearchError):
    """An invalid spec. The message is one line: ``field.path: what was expected``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StemSpec(_Frozen):
    """S0: ``conv`` = two 3x3 convolutions (first strided); ``patch`` = a ViT patch embedding."""

    kind: StemKind = "conv"
    channels: int = Field(64, gt=0)
    stride: int = Field(2, ge=1, description="total stride of the stem")
    norm: NormKind = "batch"
    #: a bias on the conv stem's second convolution (timm's stem has none)
    bias: bool = True

    @model_validator(mode="after")
    def _check_stride(self) -> StemSpec:
        if self.kind == "conv" and self.stride not in (1, 2):
            raise ValueError(f"stride: a conv stem has stride 1 or 2, got {self.stride}")
        return self


class StageSpec(_Frozen):
    """One stage: ``blocks`` blocks of one kind at one width.

    ``expansion`` is the MBConv inverted-bottleneck ratio for ``C`` stages and the FFN
    ratio for ``T`` stages. ``norm`` applies to MBConv blocks (Transformer blocks always use
    LayerNorm). ``head_dim`` and ``attention`` apply to ``T`` stages. ``stride_mode`` says where
    a downsampling MBConv block strides: ``1x1`` on its first 1x1 convolution (the paper's
    choice), ``dw`` on the depthwise convolution (timm's ``coatnet_0_224``; the expansion then
    runs at the input resolution, about 10% more FLOPs). ``pool`` is the 2x2 pooling of a
    downsampling block's shortcut (and of a ``T`` block's attention input): ``max`` (the
    paper's) or ``avg`` (timm's). ``se_base``: the SE bottleneck is ``se_ratio`` times the
    block's input width (``in``, EfficientNet's) or its output width (``out``, timm's).
    """

    kind: StageKind
    blocks: int = Field(gt=0)
    channels: int = Field(gt=0)
    stride: Literal[1, 2] = 2
    expansion: float = Field(4.0, gt=0)
    head_dim: int = Field(32, gt=0)
    se_ratio: float = Field(0.25, ge=0, lt=1)
    norm: NormKind = "batch"
    attention: AttentionKind = "relative"
    stride_mode: StrideMode = "1x1"
    pool: PoolKind = "max"
    se_base: SeBase = "in"

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return BLOCK_KINDS.check(kind)

    @model_validator(mode="after")
    def _check_kind(self) -> StageSpec:
        check = BLOCK_KINDS[self.kind].check
        problem = check(self) if check is not None else None
        if problem:
            raise ValueError(problem)
        return self

    @property
    def heads(self) -> int:
        """Attention heads of an attention (``T``) stage; 0 for others."""
        return self.channels // self.head_dim if attends(self.kind) else 0

    @property
    def width_multiple(self) -> int:
        """What this stage's width must be a multiple of: 8, and ``head_dim`` in attention stages."""
        return math.lcm(CHANNEL_MULTIPLE, self.head_dim) if attends(self.kind) else CHANNEL_MULTIPLE


class NetSpec(_Frozen):
    """A whole network: stem, stages, input and head."""

    name: str | None = None
    stem: StemSpec = StemSpec()
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    image_size: int = Field(224, gt=0)
    in_channels: int = Field(3, gt=0)
    num_classes: int = Field(1000, gt=0)
    drop_path: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    head_hidden: int | None = Field(None, gt=0, description="optional pre-logits width")
    allow_any_order: bool = Field(
        False, description="allow a C stage after a T stage (the family puts C before T)"
    )
    #: epsilon of every LayerNorm (torch's default; timm's CoAtNets use 1e-6)
    layer_norm_eps: float = Field(1e-5, gt=0, lt=0.1)
    #: ``absolute``: a learned position embedding added to the tokens entering the first
    #: attention stage, as the paper's ViT baseline has; plain attention (``attention:
    #: plain``) has no other position signal. ``none``: the relative bias is the only one.
    position_embedding: Literal["none", "absolute"] = "none"

    @field_validator("stages", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check_net(self) -> NetSpec:
        if not self.allow_any_order:
            seen_t = False
            for i, stage in enumerate(self.stages):
                if attends(stage.kind):
                    seen_t = True
                elif seen_t:
                    raise FieldError(
                        ("stages", i, "kind"),
                        "a C stage follows a T stage; the family puts convolution before "
                        "attention (set allow_any_order: true to allow it)",
                    )
        stride = self.total_stride
        if self.image_size % stride:
            raise FieldError(
                ("image_size",),
                f"{self.image_size} is not divisible by the total stride {stride}",
            )
        return self

    # ----------------------------------------------------------------- derived facts
    @property
    def total_stride(self) -> int:
        return self.stem.stride * math.prod(s.stride for s in self.stages)

    @property
    def layout(self) -> str:
        """Stage kinds joined by '-', with stride-1 continuations joined by '+'.

        ``C-C-T-T`` for CoAtNet-0; ``C-C-C+T-T`` for CoAtNet-6's mixed S3.
        """
        parts: list[str] = []
        for stage in self.stages:
            if parts and stage.stride == 1:
                parts[-1] += "+" + stage.kind
            else:
                parts.append(stage.kind)
        return "-".join(parts)

    def position_site(self) -> tuple[int, int, int] | None:
        """Where ``position_embedding: absolute`` adds its grid: (the first attention stage's
        index, the width and side of its input), or None (the build and the count share it)."""
        first = next((i for i, stage in enumerate(self.stages) if stage.kind == "T"), -1)
        if self.position_embedding != "absolute" or first < 0:
            return None
        if first == 0:
            return first, self.stem.channels, self.image_size // self.stem.stride
        return first, self.stages[first - 1].channels, self.resolutions()[first - 1]

    def resolutions(self, image_size: int | None = None) -> list[int]:
        """Feature-map side length at the output of each stage."""
        size = (image_size or self.image_size) // self.stem.stride
        out = []
        for stage in self.stages:
            size //= stage.stride
            out.append(size)
        return out

    @property
    def stage_groups(self) -> tuple[tuple[int, ...], ...]:
        """Stage indices grouped as the paper numbers stages: ``((0,), (1,), (2, 3), (4,))``
        for CoAtNet-6, whose mixed S3 is two entries (a stride-1 stage continues the group
        before it). Depth scaling, splits and names all read this."""
        groups: list[list[int]] = []
        for i, stage in enumerate(self.stages):
            if groups and stage.stride == 1:
                groups[-1].append(i)
            else:
                groups.append([i])
        return tuple(tuple(g) for g in groups)

    @property
    def stage_names(self) -> list[str]:
        """``S1``, ``S2``...; the entries of a mixed stage get a letter: ``S3a``, ``S3b``."""
        names = [""] * len(self.stages)
        for g, members in enumerate(self.stage_groups, start=1):
            for j, i in enumerate(members):
                names[i] = f"S{g}" + (string.ascii_lowercase[j] if len(members) > 1 else "")
        return names

    @property
    def depth_stages(self) -> frozenset[int]:
        """The stages depth scaling grows: the middle groups S2..S(n-1), as the paper grows
        S2 and S3 from CoAtNet-0 to -1 (S1 and S4 keep 2 blocks). With fewer than three
        groups every stage grows."""
        groups = self.stage_groups
        if len(groups) < 3:
            return frozenset(range(len(self.stages)))
        return frozenset(i for group in groups[1:-1] for i in group)

    # ----------------------------------------------------------------- transforms
    # Every change a search or a budget makes to a network is one of these: validated
    # copies, one rounding rule (`make_divisible`), ties between widths kept.
    def map_stages(self, kind: StageKind | None = None, /, **fields: Any) -> NetSpec:
        """Set ``fields`` on every stage of ``kind`` (every stage when None).

        A ``T`` stage whose ``head_dim`` changes gets the nearest width divisible by it, so
        ``spec.map_stages("T", head_dim=64)`` always gives a valid spec.
        """
        head_dim = fields.get("head_dim", 1)
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
            raise SpecError(f"head_dim: expected a positive whole number, got {head_dim!r}")
        stages = []
        for stage in self.stages:
            data = stage.model_dump(mode="json")
            if kind is None or stage.kind == kind:
                data.update(fields)
                if attends(data["kind"]) and "head_dim" in fields:
                    data["channels"] = make_divisible(stage.channels, math.lcm(CHANNEL_MULTIPLE, int(fields["head_dim"])))
            stages.append(data)
        return self.with_stages(stages)

    def with_layout(self, layout: str) -> NetSpec:
        """The same stages with the kinds of ``layout`` (``C-C-T-T``; ``+`` joins the entries
        of a mixed stage, ``C-C-C+T-T``), blocks and widths kept. A stage that becomes ``T``
        gets the nearest width divisible by its ``head_dim``."""
        groups = [part.split("+") for part in layout.upper().split("-")] if layout else []
        kinds = [k.strip() for group in groups for k in group]
        if not kinds or any(k not in BLOCK_KINDS for k in kinds):
            raise SpecError(f"layout: expected stage kinds {BLOCK_KINDS.expected()} joined by '-' (or '+'), got {layout!r}")
        shape = [len(g) for g in self.stage_groups]
        if [len(g) for g in groups] != shape:
            raise SpecError(
                f"layout: {layout} does not fit the base's stages ({self.layout}: "
                f"{len(self.stages)} stage entries in {len(shape)} stages)"
            )
        stages = []
        for stage, kind in zip(self.stages, kinds):
            data = stage.model_dump(mode="json")
            data["kind"] = kind
            if attends(kind):
                data["channels"] = make_divisible(stage.channels, math.lcm(CHANNEL_MULTIPLE, stage.head_dim))
            stages.append(data)
        return self.with_stages(stages)

    def with_split(self, s2_blocks: int, total: int | None = None) -> NetSpec:
        """``s2_blocks`` blocks in S2 and the rest of ``total`` (default: S2 + S3 as they
        are) in S3: the paper's V0/V1/V2 comparison."""
        groups = self.stage_groups
        if len(groups) < 3 or len(groups[1]) != 1 or len(groups[2]) != 1:
            raise SpecError("split: needs S2 and S3, each a single stage")
        s2, s3 = groups[1][0], groups[2][0]
        total = total or self.stages[s2].blocks + self.stages[s3].blocks
        if isinstance(s2_blocks, bool) or not isinstance(s2_blocks, int) or not 1 <= s2_blocks <= total - 1:
            raise SpecError(f"split: S2 blocks must be a whole number from 1 to {total - 1} (of {total}), got {s2_blocks!r}")
        stages = [s.model_dump(mode="json") for s in self.stages]
        stages[s2]["blocks"], stages[s3]["blocks"] = s2_blocks, total - s2_blocks
        return self.with_stages(stages)

    def scaled(self, *, width: float = 1.0, depth: float = 1.0, resolution: float = 1.0) -> NetSpec:
        """Every width times ``width``, the blocks of `depth_stages` times ``depth``, the
        image size times ``resolution``.

        Widths round to their `StageSpec.width_multiple`, blocks half up (at least 1), the
        image size to a multiple of the total stride. A stem or pre-logits layer as wide as
        its neighbouring stage stays as wide (scaling never adds a projection the network
        did not have); otherwise it scales by the same factor.
        """
        for name, factor in (("width", width), ("depth", depth), ("resolution", resolution)):
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
                raise SpecError(f"{name}: a scale factor must be a positive number, got {factor!r}")
        data = self.to_dict()
        grow = self.depth_stages
        stages = []
        for i, stage in enumerate(self.stages):
            d = stage.model_dump(mode="json")
            d["channels"] = make_divisible(stage.channels * width, stage.width_multiple)
            if i in grow:
                d["blocks"] = max(1, int(stage.blocks * depth + 0.5))
            stages.append(d)
        data["stages"] = stages
        if self.stem.channels == self.stages[0].channels:
            data["stem"]["channels"] = stages[0]["channels"]
        else:
            data["stem"]["channels"] = make_divisible(self.stem.channels * width, CHANNEL_MULTIPLE)
        if self.head_hidden is not None:
            tied = self.head_hidden == self.stages[-1].channels
            data["head_hidden"] = stages[-1]["channels"] if tied else make_divisible(self.head_hidden * width, CHANNEL_MULTIPLE)
        data["image_size"] = make_divisible(self.image_size * resolution, self.total_stride)
        return NetSpec.from_dict(data)

    def as_vit_rel(self) -> NetSpec:
        """The ViT-REL counterpart: a patch stem with the stride of the stem and the first
        three stages, then all of the spec's blocks as relative-attention blocks at the width
        of its first ``T`` stage (S3's when it has none)."""
        strides = [self.stem.stride] + [s.stride for s in self.stages]
        patch = math.prod(strides[: min(4, len(strides))])
        attending = [s for s in self.stages if s.kind == "T"] or [self.stages[min(2, len(self.stages) - 1)]]
        head_dim = attending[0].head_dim
        width = make_divisible(attending[0].channels, math.lcm(CHANNEL_MULTIPLE, head_dim))
        data = self.to_dict()
        data["stem"] = {"kind": "patch", "channels": width, "stride": patch, "norm": "layer"}
        data["stages"] = [{
            "kind": "T", "blocks": sum(s.blocks for s in self.stages), "channels": width,
            "stride": 1, "head_dim": head_dim, "attention": "relative",
        }]
        data["allow_any_order"] = False
        if self.head_hidden is not None and self.head_hidden == self.stages[-1].channels:
            data["head_hidden"] = width
        return NetSpec.from_dict(data)

    def with_field(self, path: str, value: Any) -> NetSpec:
        """One field set by its path as written in YAML: ``drop_path``, ``stem.channels``,
        ``stages[2].blocks``."""
        data = self.to_dict()
        match = _STAGE_PATH.fullmatch(path)
        if match:
            index, name = int(match.group(1)), match.group(2)
            if index >= len(data["stages"]):
                raise SpecError(f"{path}: the spec has {len(data['stages'])} stages")
            data["stages"][index][name] = value
        elif path.startswith("stem."):
            data["stem"][path.split(".", 1)[1]] = value
        else:
            data[path] = value
        return NetSpec.from_dict(data)

    @classmethod
    def has_field(cls, path: str) -> bool:
        """Whether ``path`` names a field specs have (``drop_path``, ``stem.channels``,
        ``stages[1].blocks``); `with_field` takes exactly these."""
        if path in cls.model_fields and path not in ("stem", "stages"):
            return True
        head, _, name = path.partition(".")
        if head == "stem":
            return name in StemSpec.model_fields
        match = _STAGE_PATH.fullmatch(path)
        return match is not None and match.group(2) in StageSpec.model_fields

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_layout(
        cls,
        layout: str,
        blocks: Sequence[int],
        channels: Sequence[int],
        *,
        strides: Sequence[int] | None = None,
        image_size: int = 224,
        stem_stride: int | None = None,
        expansion: float = 4.0,
        head_dim: int = 32,
        se_ratio: float = 0.25,
        norm: NormKind = "batch",
        attention: AttentionKind = "relative",
        **net_fields: Any,
    ) -> NetSpec:
        """Build a spec from a layout string and per-stage lists.

        ``blocks`` and ``channels`` list S0 (the stem) first, then one entry per stage
        entry; ``strides`` (optional) lists the stage entries only. ``+`` joins the entries
        of a mixed stage (``C-C-C+T-T``, CoAtNet-6/7): the later ones run at stride 1, so
        ``NetSpec.from_layout(spec.layout, ...)`` reads back what `layout` writes. For images of at most 64 px the stem
        gets stride 1 unless ``stem_stride`` says otherwise.
        """
        groups = [part.split("+") for part in layout.upper().split("-")] if layout else []
        kinds = [k.strip() for group in groups for k in group]
        # the entries of a mixed stage ("C+T") after the first continue at stride 1
        continues = [j > 0 for group in groups for j in range(len(group))]
        n = len(kinds)
        if n == 0 or any(k not in BLOCK_KINDS for k in kinds):
            raise SpecError(f"layout: expected stage kinds {BLOCK_KINDS.expected()} joined by '-' "
                            f"(or '+' within a stage), got {layout!r}")
        for field, values in (("blocks", blocks), ("channels", channels)):
            if len(values) != n + 1:
                raise SpecError(
                    f"{field}: expected {n + 1} values (S0 then {n} stages for {layout}), "
                    f"got {len(values)}"
                )
        if strides is not None and len(strides) != n:
            raise SpecError(f"strides: expected {n} values (one per stage), got {len(strides)}")
        if stem_stride is None:
            stem_stride = 1 if image_size <= SMALL_IMAGE_MAX else 2
        data = {
            "stem": {"kind": "conv", "channels": channels[0], "stride": stem_stride, "norm": norm},
            "stages": [
                {
                    "kind": kind,
                    "blocks": blocks[i + 1],
                    "channels": channels[i + 1],
                    "stride": (1 if continues[i] else 2) if strides is None else strides[i],
                    "expansion": expansion,
                    "head_dim": head_dim,
                    "se_ratio": se_ratio,
                    "norm": norm,
                    "attention": attention,
                }
                for i, kind in enumerate(kinds)
            ],
            "image_size": image_size,
            **net_fields,
        }
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> NetSpec:
        """Validate a plain mapping (as read from YAML); raise `SpecError` on any problem."""
        return validate_mapping(cls, data, SpecError, source=source, what="spec")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> NetSpec:
        data = load_yaml(text, source or "spec", SpecError)
        if isinstance(data, dict) and "spec" in data and len(data) == 1:
            data = data["spec"]
        return cls.from_dict(data, source=source)

    def replace(self, **changes: Any) -> NetSpec:
        """A validated copy with some top-level fields changed."""
        data = self.to_dict()
        data.update(
            {k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in changes.items()}
        )
        return NetSpec.from_dict(data)

    def with_stages(self, stages: Sequence[StageSpec | dict[str, Any]]) -> NetSpec:
        return self.replace(
            stages=[s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in stages]
        )
