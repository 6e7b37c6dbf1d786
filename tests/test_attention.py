"""Tests that fail if the relative attention were wrong."""

from __future__ import annotations

import math

import pytest
import torch

from coatsearch.nn.attention import Attention2d, relative_index


def _explicit_attention(module: Attention2d, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + B) V, written out."""
    b, h, w, _ = x.shape
    n = h * w
    qkv = module.qkv(x).reshape(b, n, 3, module.heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = q @ k.transpose(-1, -2) / math.sqrt(module.head_dim)
    if module.rel_bias is not None:
        table = module.rel_bias.table  # (heads, 2h-1, 2w-1)
        bias = torch.empty(module.heads, n, n)
        for i in range(n):
            for j in range(n):
                dr = i // w - j // w
                dc = i % w - j % w
                bias[:, i, j] = table[:, dr + h - 1, dc + w - 1]
        logits = logits + bias
    out = logits.softmax(-1) @ v
    return module.proj(out.transpose(1, 2).reshape(b, h, w, -1))


@pytest.mark.parametrize("relative", [True, False])
def test_fused_kernel_matches_the_explicit_formula(relative):
    torch.manual_seed(0)
    module = Attention2d(32, 64, head_dim=16, grid=(5, 4), relative=relative).eval()
    if relative:
        torch.nn.init.normal_(module.rel_bias.table, std=1.0)
    x = torch.randn(2, 5, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), _explicit_attention(module, x), atol=1e-5, rtol=1e-5)


def test_relative_index_points_at_the_offset_cell():
    h, w = 3, 4
    index = relative_index(h, w)
    for i in range(h * w):
        for j in range(h * w):
            row, col = divmod(int(index[i, j]), 2 * w - 1)
            assert (row - (h - 1), col - (w - 1)) == (i // w - j // w, i % w - j % w)


def test_zero_query_key_weights_give_a_translation_equivariant_global_filter():
    """With Q = K = 0 the attention weights depend only on the offset i - j: a global
    depthwise filter. With a local (3x3) kernel in the table, shifting the input shifts the
    output exactly, away from the borders."""
    torch.manual_seed(1)
    grid = (12, 12)
    module = Attention2d(8, 8, head_dim=4, grid=grid).eval()
    with torch.no_grad():
        c = module.heads * module.head_dim
        module.qkv.weight[: 2 * c].zero_()
        module.qkv.bias[: 2 * c].zero_()
        table = torch.full_like(module.rel_bias.table, -1e4)
        centre = (grid[0] - 1, grid[1] - 1)
        # an asymmetric kernel, so a transposed or mirrored index would break equivariance
        table[:, centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 2] = torch.randn(2, 3, 3) * 2
        module.rel_bias.table.copy_(table)
        x = torch.randn(1, *grid, 8)
        shift = (2, 3)
        out = module(x)
        out_of_shifted = module(torch.roll(x, shifts=shift, dims=(1, 2)))
    shifted_out = torch.roll(out, shifts=shift, dims=(1, 2))
    inner = (slice(None), slice(1 + shift[0], grid[0] - 1), slice(1 + shift[1], grid[1] - 1))
    torch.testing.assert_close(out_of_shifted[inner], shifted_out[inner], atol=1e-5, rtol=1e-5)
    # and it is a real filter, not a constant: the output varies with position
    assert out[inner].std(dim=(1, 2)).min() > 1e-3


def test_changing_the_bias_table_changes_the_output():
    torch.manual_seed(2)
    module = Attention2d(16, 16, head_dim=8, grid=(4, 4)).eval()
    x = torch.randn(1, 4, 4, 16)
    with torch.no_grad():
        before = module(x)
        module.rel_bias.table[0, 3, 3] += 5.0
        after = module(x)
    assert not torch.allclose(before, after, atol=1e-4)


def test_bias_table_is_resized_bilinearly_at_another_grid():
    module = Attention2d(16, 16, head_dim=8, grid=(4, 4))
    assert module.rel_bias.table_for(4, 4) is module.rel_bias.table
    resized = module.rel_bias.table_for(8, 8)
    assert resized.shape == (2, 15, 15)
    # corners are kept exactly (align_corners=True): the extreme offsets map to each other
    torch.testing.assert_close(resized[:, 0, 0], module.rel_bias.table[:, 0, 0])
    assert module(torch.randn(1, 8, 8, 16)).shape == (1, 8, 8, 16)


def test_inference_then_training_reuses_the_cached_index():
    module = Attention2d(16, 16, head_dim=8, grid=(4, 4))
    x = torch.randn(1, 4, 4, 16)
    with torch.inference_mode():
        module(x)
    module(x).sum().backward()
    assert module.rel_bias.table.grad is not None
