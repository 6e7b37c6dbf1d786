"""The family's blocks, as in the paper's appendix A.1.

All blocks take and return NCHW tensors, so stages of either kind stack in any order.
Transformer blocks work in channels_last memory (their first LayerNorm puts the tensor
there if it was not), so every token-wise layer reads ``(B, H, W, C)`` memory without a
copy and runs as a oneDNN 1x1 convolution on a CPU (`coatsearch.nn.layers.pointwise`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.nn.attention import Attention2d
from coatsearch.nn.fused import batch_norm_gelu, hooked, owned_grad
from coatsearch.nn.layers import (
    DropPath,
    Folded,
    SqueezeExcite,
    bn_scale_shift,
    channel_layer_norm,
    conv_act,
    foldable,
    inference_fast_path,
    norm2d,
    pointwise,
)
from coatsearch.spec import ffn_hidden, mbconv_hidden, mbconv_se_width


class ConvStem(nn.Module):
    """S0: two 3x3 convolutions, the first with the stem's stride (2, or 1 for small images)."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str, bias: bool = True,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm2d(norm, channels, eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self._folded = Folded()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if inference_fast_path(x) and foldable(self.norm1):
            weight, bias = self._folded.get(_bn_sources(self.conv1, self.norm1), self._fold)
            x = conv_act(x, weight, bias, stride=self.conv1.stride[0], padding=1, gelu=True)
            return conv_act(x, self.conv2.weight, self.conv2.bias, padding=1)
        return self.conv2(batch_norm_gelu(self.conv1(x), self.norm1, owned_grad(self.conv2)))

    def train(self, mode: bool = True) -> ConvStem:
        self._folded.clear()
        return super().train(mode)

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = bn_scale_shift(self.norm1)
        return self.conv1.weight * scale[:, None, None, None], shift


class PatchStem(nn.Module):
    """ViT stem: non-overlapping ``stride x stride`` patches, linearly embedded, then the
    stem's norm (ViT-REL's is a LayerNorm over channels)."""

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str = "layer", eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, stride, stride=stride)
        self.norm = norm2d(norm, channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Shortcut(nn.Module):
    """Residual path of a block that changes resolution or width: ``Proj(Pool(x))``.

    Pool is a 2x2 max- or average pool (when striding); Proj a 1x1 convolution (when the
    width changes).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: str = "max") -> None:
        super().__init__()
        self.pool: nn.Module = nn.Identity()
        if stride == 2:
            self.pool = nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2)
        self.proj = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class MBConv(nn.Module):
    """Pre-norm inverted bottleneck with squeeze-excitation.

    ``x + Proj(SE(DWConv3x3(Conv1x1_expand(Norm(x)))))``. When downsampling, the stride sits on
    the first 1x1 convolution with ``stride_mode="1x1"`` (the paper's choice: the expansion
    then runs at the reduced size, about 10% fewer FLOPs) or on the depthwise convolution
    with ``"dw"`` (timm's); the residual path is ``Proj(Pool(x))``. The hidden width is ``expansion x out_channels``; the SE
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
        stride_mode: str = "1x1",
        pool: str = "max",
        se_base: str = "in",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if stride_mode not in ("1x1", "dw"):
            raise ValueError(f"stride_mode: expected '1x1' or 'dw', got {stride_mode!r}")
        hidden = mbconv_hidden(out_channels, expansion)
        expand_stride, dw_stride = (stride, 1) if stride_mode == "1x1" else (1, stride)
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride, pool)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.pre_norm = norm2d(norm, in_channels, eps)
        self.expand = nn.Conv2d(in_channels, hidden, 1, stride=expand_stride, bias=False)
        self.expand_norm = norm2d(norm, hidden, eps)
        self.depthwise = nn.Conv2d(
            hidden, hidden, 3, stride=dw_stride, padding=1, groups=hidden, bias=False
        )
        self.depthwise_norm = norm2d(norm, hidden, eps)
        reduced = mbconv_se_width(in_channels, se_ratio, out_channels, se_base)
        self.se = SqueezeExcite(hidden, reduced) if reduced else nn.Identity()
        self.proj = nn.Conv2d(hidden, out_channels, 1)
        self.drop_path = DropPath(drop_path)
        self._folded = Folded()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if inference_fast_path(x) and foldable(self.pre_norm, self.expand_norm, self.depthwise_norm):
            return self._forward_folded(x)
        residual = self.shortcut(x)
        # owned_grad: what reaches these outputs' backwards is a convolution's or the SE
        # gate's gradient, which nothing else keeps (with the SE's pooled branch added into
        # it by autograd), unless a hook on a consumer (or a global one) could keep it
        x = batch_norm_gelu(self.expand(self.pre_norm(x)), self.expand_norm,
                            owned_grad(self.depthwise))
        x = batch_norm_gelu(self.depthwise(x), self.depthwise_norm, owned_grad(self.se, self.proj))
        x = self.proj(self._squeeze_excite(x))
        return residual + self.drop_path(x)

    def _squeeze_excite(self, x: torch.Tensor) -> torch.Tensor:
        """SE gating written over ``x``, which nothing reads after the gate (see `gate_`)."""
        if not isinstance(self.se, SqueezeExcite):
            return x
        if hooked(self.se):  # a hook's view of the input cannot be written over
            return self.se(x)
        return self.se(x, inplace=True, grad_in_place=owned_grad(self.proj))

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with the three BatchNorms folded into the two convolutions around them.

        The pre-norm folds exactly into the 1x1 expansion (a per-pixel affine map before a
        1x1 convolution, even a strided one); the other two fold into the conv before them.
        GELU, the SE gate and the residual add are fused or done in place.
        """
        residual = self.shortcut(x)
        sources = (
            *_bn_sources(self.expand, self.pre_norm),
            *_bn_sources(self.expand_norm),
            *_bn_sources(self.depthwise, self.depthwise_norm),
        )
        w_expand, b_expand, w_dw, b_dw = self._folded.get(sources, self._fold)
        x = conv_act(x, w_expand, b_expand, stride=self.expand.stride[0], gelu=True)
        x = conv_act(x, w_dw, b_dw, stride=self.depthwise.stride[0], padding=1,
                     groups=self.depthwise.groups, gelu=True)
        x = self._squeeze_excite(x)
        return conv_act(x, self.proj.weight, self.proj.bias, add=residual)

    def train(self, mode: bool = True) -> MBConv:
        self._folded.clear()
        return super().train(mode)

    def _fold(self) -> tuple[torch.Tensor, ...]:
        pre_scale, pre_shift = bn_scale_shift(self.pre_norm)
        scale, shift = bn_scale_shift(self.expand_norm)
        weight = self.expand.weight  # (hidden, in, 1, 1), no bias
        bias = weight.flatten(1) @ pre_shift
        w_expand = weight * pre_scale[None, :, None, None] * scale[:, None, None, None]
        b_expand = bias * scale + shift
        dw_scale, dw_shift = bn_scale_shift(self.depthwise_norm)
        return w_expand, b_expand, self.depthwise.weight * dw_scale[:, None, None, None], dw_shift


def _bn_sources(*modules: Any) -> tuple[torch.Tensor, ...]:
    """The tensors a folded weight depends on (parameters and running statistics)."""
    out: list[Any] = []
    for m in modules:
        out += [t for t in (m.weight, m.bias) if t is not None]
        if isinstance(m, nn.BatchNorm2d):
            # the kernel's in-place update of the running statistics does not bump their
            # version counters; num_batches_tracked's Python-side add_ does
            out += [m.running_mean, m.running_var]
            if m.num_batches_tracked is not None:
                out.append(m.num_batches_tracked)
    return tuple(out)


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
        pool: str = "max",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.pool = pool
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride, pool)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.attn_norm = nn.LayerNorm(in_channels, eps=eps)
        self.attn = Attention2d(in_channels, out_channels, head_dim, grid, relative)
        self.ffn_norm = nn.LayerNorm(out_channels, eps=eps)
        hidden = ffn_hidden(out_channels, expansion)
        self.ffn = nn.Sequential(
            nn.Linear(out_channels, hidden), nn.GELU(), nn.Linear(hidden, out_channels)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)
        y = channel_layer_norm(x, self.attn_norm)
        if self.stride == 2:
            y = F.avg_pool2d(y, 2, 2) if self.pool == "avg" else F.max_pool2d(y, 2, 2)
        if inference_fast_path(x):  # fused GELU and residual adds (drop path is off)
            x = self.attn.forward_nchw(y, add=residual)
            y = pointwise(channel_layer_norm(x, self.ffn_norm), self.ffn[0], gelu=True)
            return pointwise(y, self.ffn[2], add=x)
        x = residual + self.drop_path(self.attn.forward_nchw(y))
        y = pointwise(channel_layer_norm(x, self.ffn_norm), self.ffn[0])
        x = x + self.drop_path(pointwise(self.ffn[1](y), self.ffn[2]))
        return x
