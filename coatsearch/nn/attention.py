"""Multi-head self-attention over a 2-D token grid, with the paper's relative bias.

Relative attention (Dai et al., 2021, eq. 3, pre-softmax form)::

    y_i = sum_j softmax_j(q_i . k_j / sqrt(d) + w[i - j]) v_j

``w`` holds one learned scalar per head per 2-D offset: a ``(2H-1) x (2W-1)`` table per
head, gathered into an ``N x N`` bias and passed to `F.scaled_dot_product_attention` as
its additive ``attn_mask``, so the fused kernel does the softmax.

Resolution changes: the table is learned at the grid it was built for. At another grid
size it is resized (bilinear, half-pixel centres: `resize_table`) to ``(2H'-1) x (2W'-1)``
before indexing; at inference the resized, gathered bias is cached, so that happens once.
To fine-tune at a new resolution as the paper does, enlarge the stored tables themselves
(`coatsearch.convert`), so training learns the full table. A model's parameters never
change shape, so its checkpoints load at any resolution.

Speed: when no gradient is needed (inference) the gathered bias is cached per grid, keyed
by the table's identity and version counter, so it is rebuilt after any in-place change
(an optimiser step, `load_state_dict`) and dropped on `train()`. `Attention2d.forward_nchw`
is the path the Transformer block uses: its projections run as 1x1 convolutions on
channels_last memory (see `coatsearch.nn.layers.pointwise`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.nn.layers import pointwise
from coatsearch.nn.tracing import fast_path_allowed


def relative_index(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """``(N, N)`` indices into a flattened ``(2H-1) x (2W-1)`` table, ``N = H*W``.

    Entry ``[i, j]`` is the table cell of the offset ``(row_i - row_j, col_i - col_j)``.
    """
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    d_row = rows[:, None] - rows[None, :] + (height - 1)
    d_col = cols[:, None] - cols[None, :] + (width - 1)
    return d_row * (2 * width - 1) + d_col


def resize_table(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(heads, 2H-1, 2W-1)`` bias table resized bilinearly to ``size`` with half-pixel
    centres (``align_corners=False``, as TensorFlow's resize and timm do): the zero offset
    stays at the centre and each cell is treated as an area, instead of stretching the table
    so that its corner cells meet (``align_corners=True``)."""
    if tuple(table.shape[1:]) == tuple(size):
        return table
    return F.interpolate(table.unsqueeze(0), size=size, mode="bilinear", align_corners=False).squeeze(0)


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
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> RelativePositionBias:
        self._bias_cache.clear()
        return super().train(mode)

    def _index(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():  # traced into the graph, no dict guard to recompile on
            return relative_index(height, width, device)
        key = (height, width, device)
        if key not in self._index_cache:
            # A normal tensor even when first built under inference_mode, so the cached
            # index can later be used by a training step.
            with torch.inference_mode(False):
                self._index_cache[key] = relative_index(height, width, device)
        return self._index_cache[key]

    def table_for(self, height: int, width: int) -> torch.Tensor:
        """The table resized to a ``height x width`` grid when it differs (`resize_table`)."""
        return resize_table(self.table, (2 * height - 1, 2 * width - 1))

    def forward(self, height: int, width: int) -> torch.Tensor:
        """The ``(heads, N, N)`` bias for an ``height x width`` grid."""
        table = self.table_for(height, width).flatten(1)
        return table[:, self._index(height, width, table.device)]

    def mask(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """The ``(1, heads, N, N)`` additive mask, cached while no gradient is needed."""
        table = self.table
        if (torch.is_grad_enabled() and table.requires_grad) or not fast_path_allowed():
            return self(height, width).unsqueeze(0).to(dtype)
        key = (height, width, dtype, table.device, id(table), table._version)
        bias = self._bias_cache.get(key)
        if bias is None:
            with torch.inference_mode(False), torch.no_grad():
                bias = self(height, width).unsqueeze(0).to(dtype).contiguous()
            self._bias_cache.clear()  # one grid at a time: stale versions never pile up
            self._bias_cache[key] = bias
        return bias

    def extra_repr(self) -> str:
        return f"heads={self.heads}, grid={self.grid}"


def _attention_with_bias_grad(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` when the bias needs a gradient (training).

    `F.scaled_dot_product_attention` has no fused kernel for a mask that needs a gradient
    and falls back to its math path, which scales both q and k (two extra copies), and
    wraps the softmax in -inf checks; this is the same formula without those passes.
    """
    logits = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-1, -2))
    return torch.matmul(logits.add_(bias).softmax(-1), v)


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
        """``(B, H, W, C_in)`` -> ``(B, H, W, C_out)``."""
        return self.forward_nchw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward_nchw(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)`` in channels_last memory (``+ add``)."""
        batch, _, height, width = x.shape
        tokens = height * width
        # channels_last: the (B, H, W, 3C) memory splits as (tokens, 3, heads, head_dim)
        qkv = pointwise(x, self.qkv).permute(0, 2, 3, 1)
        qkv = qkv.reshape(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.rel_bias is not None:
            bias = self.rel_bias.mask(height, width, q.dtype)
        if bias is not None and bias.requires_grad and fast_path_allowed():
            out = _attention_with_bias_grad(q, k, v, bias)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # (B, heads, N, d) -> (B, H, W, heads*d) memory, seen as NCHW channels_last. The fused
        # kernels lay their output out as (B, N, heads, d), so the reshape is a free view;
        # an exported graph records those strides but may run another kernel (ONNX's
        # decomposition gives (B, heads, N, d) memory), so there a copy makes the view valid
        out = out.transpose(1, 2)
        if torch.compiler.is_exporting():
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.reshape(batch, height, width, self.heads * self.head_dim)
        return pointwise(out.permute(0, 3, 1, 2), self.proj, add=add)
