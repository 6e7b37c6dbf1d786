"""Frozen copy of the network modules as of 5a72557, before the speed work (issue 11).

Used only by tests/test_speed_equivalence.py as the reference the optimised modules must
match output-for-output with the same state_dict. Never edit it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.spec import NetSpec, StageSpec


# ---- coatsearch/nn/layers.py
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor.

    With channels_last memory the permutes are free views, so this costs no copy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def norm2d(kind: str, channels: int) -> nn.Module:
    """``batch`` -> BatchNorm2d, ``layer`` -> LayerNorm over channels."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return LayerNorm2d(channels)
    raise ValueError(f"norm: expected 'batch' or 'layer', got {kind!r}")


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch for a random subset of samples."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (Hu et al.), as in EfficientNet."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(F.silu(self.reduce(scale)))
        return x * torch.sigmoid(scale)


# ---- coatsearch/nn/attention.py
def relative_index(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` indices into a flattened ``(2H-1) x (2W-1)`` table, ``N = H*W``.

    Entry ``[i, j]`` is the table cell of the offset ``(row_i - row_j, col_i - col_j)``.
    """
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    d_row = rows[:, None] - rows[None, :] + (height - 1)
    d_col = cols[:, None] - cols[None, :] + (width - 1)
    return d_row * (2 * width - 1) + d_col


class RelativePositionBias(nn.Module):
    """Learned per-head bias for every relative offset on an ``H x W`` grid."""

    def __init__(self, heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.grid = grid
        height, width = grid
        self.table = nn.Parameter(torch.zeros(heads, 2 * height - 1, 2 * width - 1))
        nn.init.trunc_normal_(self.table, std=0.02)
        self._index_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _index(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, device)
        if key not in self._index_cache:
            # A normal tensor even when first built under inference_mode, so the cached
            # index can later be used by a training step.
            with torch.inference_mode(False):
                self._index_cache[key] = relative_index(height, width, device)
        return self._index_cache[key]

    def table_for(self, height: int, width: int) -> torch.Tensor:
        """The table resized (bilinear) to a ``height x width`` grid when it differs."""
        target = (2 * height - 1, 2 * width - 1)
        if tuple(self.table.shape[1:]) == target:
            return self.table
        return F.interpolate(
            self.table.unsqueeze(0), size=target, mode="bilinear", align_corners=True
        ).squeeze(0)

    def forward(self, height: int, width: int) -> torch.Tensor:
        """The ``(heads, N, N)`` bias for an ``height x width`` grid."""
        table = self.table_for(height, width).flatten(1)
        return table[:, self._index(height, width, table.device)]

    def extra_repr(self) -> str:
        return f"heads={self.heads}, grid={self.grid}"


class Attention2d(nn.Module):
    """Self-attention on a ``(B, H, W, C_in)`` grid, output width ``C_out``.

    ``relative=False`` gives plain (content-only) attention, for the paper's Table 6.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        head_dim: int,
        grid: tuple[int, int],
        relative: bool = True,
    ) -> None:
        super().__init__()
        self.heads = out_channels // head_dim
        self.head_dim = head_dim
        self.qkv = nn.Linear(in_channels, 3 * out_channels)
        self.proj = nn.Linear(out_channels, out_channels)
        self.rel_bias = RelativePositionBias(self.heads, grid) if relative else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.rel_bias is not None:
            bias = self.rel_bias(height, width).unsqueeze(0).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, height, width, self.heads * self.head_dim)
        return self.proj(out)


# ---- coatsearch/nn/blocks.py
class ConvStem(nn.Module):
    """S0: two 3x3 convolutions, the first with the stem's stride (2, or 1 for small images)."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm2d(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.norm1(self.conv1(x))))


class PatchStem(nn.Module):
    """ViT stem: non-overlapping ``stride x stride`` patches, linearly embedded, then the
    stem's norm (added to the architecture after the freeze, so both sides have it)."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str = "layer") -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, stride, stride=stride)
        self.norm = norm2d(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Shortcut(nn.Module):
    """Residual path of a block that changes resolution or width: ``Proj(Pool(x))``.

    Pool is a 2x2 max-pool (when striding); Proj a 1x1 convolution (when the width changes).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()
        self.proj = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class MBConv(nn.Module):
    """Pre-norm inverted bottleneck with squeeze-excitation.

    ``x + Proj(SE(DWConv3x3(Conv1x1_expand(Norm(x)))))``. When downsampling, the stride sits on
    the first 1x1 convolution (the paper's choice: the expansion then runs at the reduced
    size, about 10% fewer FLOPs than striding the depthwise convolution), and the residual
    path is ``Proj(Pool(x))``. The hidden width is ``expansion x out_channels``; the SE
    bottleneck is ``se_ratio x in_channels`` wide (EfficientNet's convention).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: float = 4.0,
        se_ratio: float = 0.25,
        norm: str = "batch",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = mbconv_hidden(out_channels, expansion)
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.pre_norm = norm2d(norm, in_channels)
        self.expand = nn.Conv2d(in_channels, hidden, 1, stride=stride, bias=False)
        self.expand_norm = norm2d(norm, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.depthwise_norm = norm2d(norm, hidden)
        reduced = mbconv_se_width(in_channels, se_ratio)
        self.se = SqueezeExcite(hidden, reduced) if reduced else nn.Identity()
        self.proj = nn.Conv2d(hidden, out_channels, 1)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)
        x = F.gelu(self.expand_norm(self.expand(self.pre_norm(x))))
        x = F.gelu(self.depthwise_norm(self.depthwise(x)))
        x = self.proj(self.se(x))
        return residual + self.drop_path(x)


def mbconv_hidden(out_channels: int, expansion: float) -> int:
    """Width of the MBConv inverted bottleneck."""
    return max(1, round(out_channels * expansion))


def mbconv_se_width(in_channels: int, se_ratio: float) -> int:
    """Width of the squeeze-excitation bottleneck (0 disables SE)."""
    return max(1, int(in_channels * se_ratio)) if se_ratio > 0 else 0


def ffn_hidden(channels: int, expansion: float) -> int:
    """Width of the Transformer feed-forward layer."""
    return max(1, round(channels * expansion))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block with (relative) attention and an FFN.

    ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``. When downsampling the attention branch
    is ``Attention(Pool(LN(x)))`` and the residual path ``Proj(Pool(x))`` (2x2 max-pool).
    ``grid`` is the token grid the relative bias is learned for (after any pooling).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: tuple[int, int],
        stride: int = 1,
        head_dim: int = 32,
        expansion: float = 4.0,
        relative: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.attn_norm = nn.LayerNorm(in_channels)
        self.attn = Attention2d(in_channels, out_channels, head_dim, grid, relative)
        self.ffn_norm = nn.LayerNorm(out_channels)
        hidden = ffn_hidden(out_channels, expansion)
        self.ffn = nn.Sequential(
            nn.Linear(out_channels, hidden), nn.GELU(), nn.Linear(hidden, out_channels)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x).permute(0, 2, 3, 1)
        y = self.attn_norm(x.permute(0, 2, 3, 1))
        if self.stride == 2:
            y = F.max_pool2d(y.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)
        x = residual + self.drop_path(self.attn(y))
        x = x + self.drop_path(self.ffn(self.ffn_norm(x)))
        return x.permute(0, 3, 1, 2)


# ---- coatsearch/nn/model.py
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
            self.stem: nn.Module = ConvStem(spec.in_channels, stem.channels, stem.stride, stem.norm)
        else:
            self.stem = PatchStem(spec.in_channels, stem.channels, stem.stride, stem.norm)

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
                    )
                )
                block_index += 1
            stages.append(nn.Sequential(*blocks))
            width = stage.channels
        self.stages = nn.ModuleList(stages)

        self.head_norm = nn.LayerNorm(width)
        if spec.head_hidden:
            self.pre_logits: nn.Module = nn.Sequential(nn.Linear(width, spec.head_hidden), nn.Tanh())
            width = spec.head_hidden
        else:
            self.pre_logits = nn.Identity()
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(width, spec.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))
        x = self.pre_logits(self.head_norm(x))
        return self.classifier(self.dropout(x))


def _make_block(
    stage: StageSpec, in_channels: int, stride: int, grid: tuple[int, int], drop_path: float
) -> nn.Module:
    if stage.kind == "C":
        return MBConv(
            in_channels,
            stage.channels,
            stride=stride,
            expansion=stage.expansion,
            se_ratio=stage.se_ratio,
            norm=stage.norm,
            drop_path=drop_path,
        )
    return TransformerBlock(
        in_channels,
        stage.channels,
        grid=grid,
        stride=stride,
        head_dim=stage.head_dim,
        expansion=stage.expansion,
        relative=stage.attention == "relative",
        drop_path=drop_path,
    )


def build(spec: NetSpec, device: torch.device | str | None = None) -> CoAtNet:
    """The `nn.Module` a spec describes. ``device="meta"`` builds it without memory."""
    if device is None:
        return CoAtNet(spec)
    with torch.device(device):
        return CoAtNet(spec)
