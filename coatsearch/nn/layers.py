"""Small layers shared by the blocks: norms, stochastic depth, squeeze-excitation, and the
kernel choices that make them fast on a CPU.

Token-wise linear layers (``nn.Linear`` weights, so checkpoints keep their keys) are run by
`pointwise` on NCHW-shaped tensors. On a CPU with oneDNN it calls a 1x1 convolution on
channels_last memory: the same arithmetic, but oneDNN's kernels run it about 2x faster than
the BLAS ``addmm`` behind ``F.linear`` (measured on AMD EPYC, torch 2.13 and 2.14, 2
threads; see benchmarks/throughput.py). Elsewhere, and while fvcore traces the model (its
counts must keep calling these layers ``linear``), it is ``F.linear`` on the token view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fast_path_allowed() -> bool:
    """False while fvcore (``torch.jit.trace``) or torch.compile traces the model.

    Tracing must see the plain operators (the counters name them); a compiled graph must not
    depend on Python-side caches. Both then take the reference path.
    """
    if torch.jit.is_tracing():
        return False
    return not torch.compiler.is_compiling()


def _conv_pointwise(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.backends.mkldnn.is_available() and not torch.jit.is_tracing()


def pointwise(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer`` applied to the channels of an NCHW tensor; the result is channels_last."""
    if _conv_pointwise(x):
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, layer.weight[:, :, None, None], layer.bias)
    return F.linear(x.permute(0, 2, 3, 1), layer.weight, layer.bias).permute(0, 3, 1, 2)


def channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` over the channels of an NCHW tensor (free permutes under channels_last)."""
    x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return x.permute(0, 3, 1, 2)


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
