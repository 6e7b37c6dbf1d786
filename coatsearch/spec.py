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
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coatsearch.validation import FieldError, one_line, validate_mapping

StageKind = Literal["C", "T"]
NormKind = Literal["batch", "layer"]
AttentionKind = Literal["relative", "plain"]
StemKind = Literal["conv", "patch"]
StrideMode = Literal["1x1", "dw"]

#: Below this image size `from_layout` uses a stride-1 stem, as CIFAR ResNets do, so
#: that the last of four stride-2 stages still sees at least 2x2 tokens.
SMALL_IMAGE_MAX = 64


class SpecError(ValueError):
    """An invalid spec. The message is one line: ``field.path: what was expected``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StemSpec(_Frozen):
    """S0: ``conv`` = two 3x3 convolutions (first strided); ``patch`` = a ViT patch embedding."""

    kind: StemKind = "conv"
    channels: int = Field(64, gt=0)
    stride: int = Field(2, ge=1, description="total stride of the stem")
    norm: NormKind = "batch"

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
    runs at the input resolution, about 10% more FLOPs).
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

    @model_validator(mode="after")
    def _check_heads(self) -> StageSpec:
        if self.kind == "T" and self.channels % self.head_dim:
            raise ValueError(
                f"channels: {self.channels} is not divisible by head_dim {self.head_dim}"
            )
        return self

    @property
    def heads(self) -> int:
        """Attention heads of a ``T`` stage (0 for ``C``)."""
        return self.channels // self.head_dim if self.kind == "T" else 0


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

    @field_validator("stages", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check_net(self) -> NetSpec:
        if not self.allow_any_order:
            seen_t = False
            for i, stage in enumerate(self.stages):
                if stage.kind == "T":
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

    def resolutions(self, image_size: int | None = None) -> list[int]:
        """Feature-map side length at the output of each stage."""
        size = (image_size or self.image_size) // self.stem.stride
        out = []
        for stage in self.stages:
            size //= stage.stride
            out.append(size)
        return out

    @property
    def stage_names(self) -> list[str]:
        """``S1``, ``S2``...; stride-1 continuations get a letter: ``S3a``, ``S3b``."""
        groups: list[list[int]] = []
        for i, stage in enumerate(self.stages):
            if groups and stage.stride == 1:
                groups[-1].append(i)
            else:
                groups.append([i])
        names = [""] * len(self.stages)
        for g, members in enumerate(groups, start=1):
            for j, i in enumerate(members):
                names[i] = f"S{g}" + ("abcdefghijklmnopqrstuvwxyz"[j] if len(members) > 1 else "")
        return names

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

        ``blocks`` and ``channels`` list S0 (the stem) first, then one entry per stage;
        ``strides`` (optional) lists the stages only. For images of at most 64 px the stem
        gets stride 1 unless ``stem_stride`` says otherwise.
        """
        kinds = [k.strip().upper() for k in layout.split("-")] if layout else []
        n = len(kinds)
        if n == 0 or any(k not in ("C", "T") for k in kinds):
            raise SpecError(f"layout: expected stage kinds C or T joined by '-', got {layout!r}")
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
                    "stride": 2 if strides is None else strides[i],
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
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = source or "spec"
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise SpecError(f"{where}: malformed YAML{at}: {problem}") from None
        if isinstance(data, dict) and "spec" in data and len(data) == 1:
            data = data["spec"]
        return cls.from_dict(data, source=source)

    def replace(self, **changes: Any) -> NetSpec:
        """A validated copy with some top-level fields changed."""
        data = self.to_dict()
        data.update(
            {k: (v.to_dict() if isinstance(v, BaseModel) else v) for k, v in changes.items()}
        )
        return NetSpec.from_dict(data)

    def with_stages(self, stages: Sequence[StageSpec | dict[str, Any]]) -> NetSpec:
        return self.replace(
            stages=[s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in stages]
        )


def spec_error_from(exc: ValidationError, source: str | None = None) -> SpecError:
    """Turn pydantic's multi-line report into one line naming the first bad field."""
    return SpecError(one_line(exc, source, root="spec"))


def load_spec(path_or_name: str | Path) -> NetSpec:
    """A preset name (``coatnet-0``) or the path of a YAML spec file."""
    from coatsearch.presets import PRESETS, preset

    text = str(path_or_name)
    if text in PRESETS:
        return preset(text)
    path = Path(text)
    if not path.exists():
        if path.suffix in (".yaml", ".yml") or "/" in text:
            raise SpecError(f"{text}: no such spec file")
        raise SpecError(f"preset: unknown preset {text!r}; expected one of {', '.join(PRESETS)}")
    if path.is_dir():
        raise SpecError(f"{text}: is a directory, expected a YAML spec file")
    return NetSpec.from_yaml(path.read_text(), source=text)
