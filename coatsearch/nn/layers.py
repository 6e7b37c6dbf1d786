"""Small layers shared by the blocks: norms, stochastic depth, squeeze-excitation, and the
kernel choices that make them fast on a CPU.

Token-wise linear layers (``nn.Linear`` weights, so checkpoints keep their keys) are run by
`pointwise` on NCHW-shaped tensors. On a CPU with oneDNN it calls a 1x1 convolution on
channels_last memory: the same arithmetic, but oneDNN's kernels run it about 2x faster than
the BLAS ``addmm`` behind ``F.linear`` (measured on AMD EPYC, torch 2.13 and 2.14, 2
threads; see benchmarks/throughput.py). Elsewhere, and while fvcore traces the model (its
counts must keep calling these layers ``linear``), it is ``F.linear`` on the token view.

Inference (no gradient needed, CPU): `conv_act` runs a convolution with its bias, GELU and
residual add in one oneDNN primitive (``torch.ops.mkldnn._convolution_pointwise``, the op
torch.compile's CPU backend emits), and `Folded` caches BatchNorm-folded weights. Both are
off while a gradient is recorded, while fvcore or torch.compile trace, and off CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.nn.fused import gate_
from coatsearch.nn.tracing import fast_path_allowed

_MKLDNN = torch.backends.mkldnn.is_available()


def _conv_pointwise(x: torch.Tensor) -> bool:
    if x.device.type != "cpu" or not _MKLDNN:
        return False
    # torch.compile: still the convolution (inductor hands it to oneDNN as well)
    return torch.compiler.is_compiling() or not torch.jit.is_tracing()


def _has_fused_conv() -> bool:
    try:
        return _MKLDNN and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


_FUSED_CONV = _has_fused_conv()


def inference_fast_path(x: torch.Tensor) -> bool:
    """True where the fused oneDNN inference kernels apply to ``x``."""
    return (
        _FUSED_CONV
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and fast_path_allowed()
    )


def conv_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    gelu: bool = False,
    add: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv2d`` then optionally GELU (exact, erf) or ``+ add``; fused where allowed."""
    if inference_fast_path(x) and not (gelu and add is not None):
        args = ([padding] * 2, [stride] * 2, [1, 1], groups)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, *args, "gelu" if gelu else "none", [], "none"
            )
        if add.shape[1] == weight.shape[0] and add.stride() == _conv_out_strides(x, add):
            return torch.ops.mkldnn._convolution_pointwise(
                x, add, weight, bias, *args, "add", None, None, [], None
            )
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if gelu:
        y = F.gelu(y)
    return y if add is None else add + y


def _conv_out_strides(x: torch.Tensor, out: torch.Tensor) -> tuple[int, ...]:
    """Strides oneDNN gives a convolution output of ``out``'s shape from input ``x``."""
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    if out.is_contiguous(memory_format=fmt):
        return out.stride()
    return ()  # never equal: fall back


def pointwise(
    x: torch.Tensor, layer: Any, *, gelu: bool = False, add: torch.Tensor | None = None
) -> torch.Tensor:
    """``layer`` applied to the channels of an NCHW tensor (then GELU or ``+ add``).

    The result is channels_last on a CPU.
    """
    if _conv_pointwise(x):
        x = x.contiguous(memory_format=torch.channels_last)
        return conv_act(x, layer.weight[:, :, None, None], layer.bias, gelu=gelu, add=add)
    y = F.linear(x.permute(0, 2, 3, 1), layer.weight, layer.bias).permute(0, 3, 1, 2)
    if gelu:
        y = F.gelu(y)
    return y if add is None else add + y


class Folded:
    """A value derived from some tensors, recomputed when any of them changes.

    The key is each tensor's storage address, version counter (bumped by every in-place
    write: optimiser steps, `load_state_dict`, BatchNorm statistics), dtype and device.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple[Any, ...] = ()

    def get(self, sources: tuple[torch.Tensor, ...], make: Any) -> tuple[Any, ...]:
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if key != self.key:
            with torch.inference_mode(False), torch.no_grad():
                self.value = tuple(v.contiguous() if v is not None else None for v in make())
            self.key = key
        return self.value

    def clear(self) -> None:
        self.key, self.value = None, ()

    def __deepcopy__(self, memo: dict) -> Folded:
        return Folded()


def bn_scale_shift(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as ``x * scale + shift`` per channel."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def foldable(*norms: nn.Module) -> bool:
    """BatchNorms in eval mode with running statistics (foldable into a convolution)."""
    return all(
        isinstance(n, nn.BatchNorm2d) and not n.training and n.running_var is not None for n in norms
    )


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


def norm2d(kind: str, channels: int, eps: float = 1e-5) -> nn.Module:
    """``batch`` -> BatchNorm2d, ``layer`` -> LayerNorm over channels (with ``eps``)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return LayerNorm2d(channels, eps=eps)
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

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, C, 1, 1)`` channel weights for ``x``."""
        # sum x 1/HW, not mean: mean's backward writes a full-size gradient (a divide over
        # the whole map); sum's is a broadcast view added straight into x's gradient
        if fast_path_allowed():
            scale = x.sum((2, 3), keepdim=True) * (1.0 / (x.shape[2] * x.shape[3]))
        else:  # traced (fvcore names the operators it counts) or compiled
            scale = x.mean((2, 3), keepdim=True)
        return torch.sigmoid(self.expand(F.silu(self.reduce(scale))))

    def forward(self, x: torch.Tensor, inplace: bool = False, grad_in_place: bool = False) -> torch.Tensor:
        """``inplace``: gate ``x`` itself, which its caller does not read afterwards;
        ``grad_in_place``: see `coatsearch.nn.fused.gate_`."""
        if inplace:
            return gate_(x, self.gate(x), grad_in_place)
        return x * self.gate(x)
