"""Training-time MBConv pieces that allocate fewer full-size tensors on a CPU.

Why: PyTorch's CPU allocator hands every tensor larger than glibc's mmap threshold (at most
32 MiB) fresh pages from the kernel, and each first touch of a page is a page fault that
zeroes it. A CoAtNet-0 training step at 224 px allocates gigabytes of such tensors (each
MBConv hidden map of S1 is 77 MB at batch 16), and on a virtual machine the faults can cost
as much time as the arithmetic. The same results with fewer fresh tensors is then a
faster step; the operators themselves are PyTorch's.

- `batch_norm_gelu`: ``GELU(BatchNorm(x))`` in training. GELU runs in place on the
  BatchNorm output, which is not kept: the backward recomputes it from the BatchNorm input
  (kept anyway), a few samples at a time, and BatchNorm's backward runs as in-place passes.
- `gate_`: the squeeze-excitation product ``x * scale`` written over ``x``. Its backward
  needs the gated map only (``d scale = sum(grad * x * scale) / scale``), summed a few
  samples at a time.
- With ``grad_in_place=True`` (the blocks' own call sites, where the output's one consumer
  is a convolution or `gate_`, whose backward makes a fresh gradient that nothing else
  reads), each backward writes its result over the incoming gradient, so neither allocates
  a full-size tensor at all. A hook that keeps such an inner gradient would see it change.

Both apply to float32 CPU tensors while a gradient is recorded, outside tracing, compiling
and autocast (`fused_training`); elsewhere the callers run the plain operators. Gradients
match the plain operators' to rounding (tests/test_fused.py, tests/test_speed_equivalence.py);
they are not differentiable twice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from coatsearch.nn.layers import fast_path_allowed

#: Largest temporary `gate_`'s backward makes at once, in bytes: below glibc's smallest
#: dynamic mmap threshold after a large free, so it is reused from the heap, not faulted.
CHUNK_BYTES = 4 << 20


def fused_training(x: torch.Tensor) -> bool:
    """True where the fused training pieces apply to ``x``."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and fast_path_allowed()
    )


def batch_norm_gelu(x: torch.Tensor, norm: nn.Module, grad_in_place: bool = False) -> torch.Tensor:
    """``F.gelu(norm(x))``; fused (see the module docstring) for a training BatchNorm2d."""
    if type(norm) is not nn.BatchNorm2d or not norm.training or not fused_training(x):
        return F.gelu(norm(x))
    running_mean, running_var, momentum = _running_stats(norm)
    return _BatchNormGelu.apply(
        x, norm.weight, norm.bias, running_mean, running_var, momentum, norm.eps, grad_in_place
    )


def _running_stats(norm: nn.BatchNorm2d) -> tuple[Any, Any, float]:
    """What ``nn.BatchNorm2d.forward`` passes on in training, and its counter's update."""
    if not norm.track_running_stats:
        return None, None, 0.0
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(norm.num_batches_tracked)
    return norm.running_mean, norm.running_var, momentum


class _BatchNormGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, running_mean, running_var, momentum: float,
                eps: float, grad_in_place: bool):
        out, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        torch.ops.aten.gelu_(out)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.grad_in_place = eps, grad_in_place
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        target = grad if ctx.grad_in_place and _writable(grad) else torch.empty_like(x)
        grads = _gelu_batch_norm_backward(grad, target, x, weight, bias, mean, invstd,
                                          ctx.needs_input_grad)
        return (*grads, None, None, None, None, None)


def _writable(grad: torch.Tensor) -> bool:
    """A gradient whose elements each have memory of their own (not a broadcast view)."""
    return grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last)


def _chunks(x: torch.Tensor) -> list[slice]:
    """Slices of the batch, each below `CHUNK_BYTES` (at least one sample)."""
    rows = max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))
    return [slice(i, i + rows) for i in range(0, x.shape[0], rows)]


def _gelu_batch_norm_backward(
    grad: torch.Tensor,
    target: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``GELU(BatchNorm(x))`` (training statistics), the input's in ``target``.

    Two passes over the batch, a few samples at a time so each chunk's later operations
    find it in cache: the first writes GELU's gradient at the recomputed BatchNorm output
    into ``target`` and sums what BatchNorm's gradient needs; the second turns it into
    BatchNorm's input gradient in place. The formula is ``native_batch_norm_backward``'s:
    ``dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat))``.
    """
    shape = (1, -1, 1, 1)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    scale, shift, centre = scale.view(shape), shift.view(shape), mean.view(shape)
    sums_grad, sums_grad_centred = [], []
    for rows in _chunks(x):
        normed = torch.addcmul(shift, x[rows], scale)
        g = torch.ops.aten.gelu_backward.grad_input(grad[rows], normed, grad_input=target[rows])
        sums_grad.append(g.sum((0, 2, 3)))
        centred = torch.sub(x[rows], centre, out=normed)
        sums_grad_centred.append(centred.mul_(g).sum((0, 2, 3)))
    count = x.numel() // x.shape[1]
    sum_grad = torch.stack(sums_grad).sum(0)
    sum_grad_xhat = torch.stack(sums_grad_centred).sum(0) * invstd  # sum(g * xhat)
    grad_weight = sum_grad_xhat if weight is not None and needs[1] else None
    grad_bias = sum_grad if bias is not None and needs[2] else None
    if not needs[0]:
        return None, grad_weight, grad_bias
    # dx = k * g + c * x + d, k = w * invstd, c = -k * invstd * sum(g * xhat) / N,
    # d = -k * sum(g) / N - c * mean
    k = scale.view(-1)
    c = -k * invstd * sum_grad_xhat / count
    d = -k * sum_grad / count - c * mean
    k, c, d = k.view(shape), c.view(shape), d.view(shape)
    for rows in _chunks(x):
        target[rows].mul_(k).addcmul_(x[rows], c).add_(d)
    return target, grad_weight, grad_bias


def gate_(x: torch.Tensor, scale: torch.Tensor, grad_in_place: bool = False) -> torch.Tensor:
    """``x * scale`` (``scale`` of shape ``(B, C, 1, 1)``) written over ``x``.

    ``x`` must not be needed afterwards by its caller (autograd raises if an operator saved
    it). In training on a CPU this is `_GateInPlace`; otherwise a plain in-place multiply
    when nothing records a gradient, and the ordinary product when something does.
    """
    if fused_training(x):
        return _GateInPlace.apply(x, scale, grad_in_place)
    if not torch.is_grad_enabled() or not (x.requires_grad or scale.requires_grad):
        return x.mul_(scale)
    return x * scale


class _GateInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, grad_in_place: bool) -> torch.Tensor:
        x.mul_(scale)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x, scale)
        ctx.grad_in_place = grad_in_place
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        gated, scale = ctx.saved_tensors
        in_place = ctx.grad_in_place and _writable(grad)
        sums = []
        for rows in _chunks(grad):  # the gradient of the gate, then (in cache) of x
            sums.append((grad[rows] * gated[rows]).sum((2, 3), keepdim=True))
            if in_place and ctx.needs_input_grad[0]:
                grad[rows].mul_(scale[rows])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad if in_place else grad * scale
        # sum(grad * x) = sum(grad * x * scale) / scale; where scale is 0 the sigmoid
        # before it passes no gradient on, so 0 there is exact for everything upstream
        summed = torch.cat(sums)
        grad_scale = torch.where(scale != 0, summed / scale, torch.zeros_like(summed))
        return grad_x, grad_scale if ctx.needs_input_grad[1] else None, None
