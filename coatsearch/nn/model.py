"""`CoAtNet`: the whole network, built from a `NetSpec` and nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.block_kinds import BLOCK_KINDS
from coatsearch.nn.blocks import ConvStem, MBConv, PatchStem, TransformerBlock
from coatsearch.spec import NetSpec, StageSpec


class CoAtNet(nn.Module):
    """Stem, stages and head of any CoAtNet-family network.

    ``stages[i]`` is an `nn.Sequential` of the blocks of ``spec.stages[i]``. The head is
    global average pooling, LayerNorm (the stages are pre-norm, so the residual stream
    needs a final norm), an optional pre-logits layer, dropout and a linear classifier.

    The model accepts any image size divisible by the spec's total stride, not only the
    one it was built for: relative-bias tables are resized bilinearly (see
    `coatsearch.nn.attention`).
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        stem = spec.stem
        if stem.kind == "conv":
            self.stem: nn.Module = ConvStem(spec.in_channels, stem.channels, stem.stride, stem.norm, stem.bias,
                                            spec.layer_norm_eps)
        else:
            self.stem = PatchStem(spec.in_channels, stem.channels, stem.stride, stem.norm, spec.layer_norm_eps)

        total_blocks = sum(s.blocks for s in spec.stages)
        rates = [spec.drop_path * i / max(1, total_blocks - 1) for i in range(total_blocks)]
        block_index = 0
        width = stem.channels
        stages = []
        for stage, side in zip(spec.stages, spec.resolutions()):
            blocks = []
            for b in range(stage.blocks):
                blocks.append(
                    _make_block(
                        stage,
                        width if b == 0 else stage.channels,
                        stage.stride if b == 0 else 1,
                        (side, side),
                        rates[block_index],
                        spec.layer_norm_eps,
                    )
                )
                block_index += 1
            stages.append(nn.Sequential(*blocks))
            width = stage.channels
        self.stages = nn.ModuleList(stages)
        self.position_stage, self.position = position_embedding(spec)

        self.head_norm = nn.LayerNorm(width, eps=spec.layer_norm_eps)
        if spec.head_hidden:
            self.pre_logits: nn.Module = nn.Sequential(nn.Linear(width, spec.head_hidden), nn.Tanh())
            width = spec.head_hidden
        else:
            self.pre_logits = nn.Identity()
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(width, spec.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            if index == self.position_stage and self.position is not None:
                position: torch.Tensor = self.position
                if position.shape[-2:] != x.shape[-2:]:  # another image size: resampled, as ViT does
                    position = F.interpolate(position, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + position
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))
        x = self.pre_logits(self.head_norm(x))
        return self.classifier(self.dropout(x))


def position_embedding(spec: NetSpec) -> tuple[int, nn.Parameter | None]:
    """The first attention stage's index and the learned embedding added to its input grid
    (``position_embedding: absolute``), or ``(-1, None)``."""
    site = spec.position_site()
    if site is None:
        return -1, None
    first, width, side = site
    embedding = nn.Parameter(torch.zeros(1, width, side, side))
    nn.init.trunc_normal_(embedding, std=0.02)
    return first, embedding


def _make_block(
    stage: StageSpec, in_channels: int, stride: int, grid: tuple[int, int], drop_path: float, eps: float
) -> nn.Module:
    """One block of ``stage``, by its kind's registered module (`coatsearch.block_kinds`)."""
    return BLOCK_KINDS[stage.kind].resolved("module")(stage, in_channels, stride, grid, drop_path, eps)


def mbconv_block(
    stage: StageSpec, in_channels: int, stride: int, grid: tuple[int, int], drop_path: float, eps: float
) -> nn.Module:
    """A ``C`` block: MBConv with squeeze-excitation."""
    return MBConv(
            in_channels,
            stage.channels,
            stride=stride,
            expansion=stage.expansion,
            se_ratio=stage.se_ratio,
            norm=stage.norm,
            drop_path=drop_path,
            stride_mode=stage.stride_mode,
            pool=stage.pool,
            se_base=stage.se_base,
            eps=eps,
        )


def transformer_block(
    stage: StageSpec, in_channels: int, stride: int, grid: tuple[int, int], drop_path: float, eps: float
) -> nn.Module:
    """A ``T`` block: (relative) self-attention and a feed-forward layer."""
    return TransformerBlock(
        in_channels,
        stage.channels,
        grid=grid,
        stride=stride,
        head_dim=stage.head_dim,
        expansion=stage.expansion,
        relative=stage.attention == "relative",
        drop_path=drop_path,
        pool=stage.pool,
        eps=eps,
    )


def build(spec: NetSpec, device: torch.device | str | None = None) -> CoAtNet:
    """The `nn.Module` a spec describes. ``device="meta"`` builds it without memory."""
    if device is None:
        return CoAtNet(spec)
    with torch.device(device):
        return CoAtNet(spec)
