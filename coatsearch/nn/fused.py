"""Training-time MBConv pieces that allocate fewer full-size tensors on a CPU; opt-in.

Off by default: the blocks then run ``nn.BatchNorm2d``, ``F.gelu`` and the SE product as
plain PyTorch operators. Turn the path on for the process with `set_fused_training`, for a
block of code with the `fused_training` context manager, or, without code (a trial
process, a benchmark), by starting Python with ``COATSEARCH_FUSED_TRAINING=1``. The
setting is read when a block runs its forward (the backward follows what the forward
chose) and is process-wide, like timm's ``set_fused_attn``.

Why: glibc serves large allocations (above its mmap threshold, which starts at 128 KiB and
rises to at most 32 MiB) with fresh pages from the kernel, and the first touch of each page
is a page fault that zeroes it. A CoAtNet-0 training step at 224 px allocates gigabytes of
tensors that size (each MBConv hidden map of S1 is 77 MB at batch 16), and on a virtual
machine the faults can cost a large share of the step. The same results with fewer fresh
tensors is then a faster step; the operators themselves are PyTorch's. An allocator that
keeps freed memory mapped (jemalloc, tcmalloc through ``LD_PRELOAD``) may avoid the same
faults without this path: benchmarks/allocators.py times both paths under each allocator.

- `batch_norm_gelu`: ``GELU(BatchNorm(x))`` in training. GELU runs in place on the
  BatchNorm output, which is not kept: the backward recomputes it from the BatchNorm input
  (kept anyway), a few samples at a time, and BatchNorm's backward runs as in-place passes.
- `gate_`: the squeeze-excitation product ``x * sigmoid(...)`` written over ``x``. Its
  backward needs the gated map only (``d scale = sum(grad * x * scale) / scale``), summed a
  few samples at a time.
- ``grad_in_place=True`` lets a backward write its result over the gradient it receives,
  so it allocates no full-size tensor at all. That is only right when nothing else holds
  that gradient: the blocks pass it (through `owned_grad`) where the output's consumers
  are a convolution and the SE gate, whose backwards make gradients no one else keeps.

Hooks see what the plain operators give. Any module hook (forward, forward pre, backward,
backward pre) on the modules whose tensors a fused piece would touch, or any global module
hook, makes that piece plain: a hooked BatchNorm runs as a module, a hooked SE as a
module without writing over its input, and no gradient reaching a hooked consumer is
written over (a forward hook can register a tensor hook on the consumer's input and keep
the gradient it receives). What no module hook reveals, and so cannot be checked here,
needs ``set_fused_training(grad_in_place=False)``: reading an inner activation's gradient
with ``torch.autograd.grad(loss, inputs=[...])`` on a tensor obtained otherwise (a module
subclass keeping its input), or hooks on autograd graph nodes (``grad_fn.register_hook``).

Both apply to float32 CPU tensors in grad mode, outside tracing, compiling, autocast and
functorch transforms (`fusion_applies`); elsewhere the callers run the plain operators.
Gradients match the plain operators' to rounding (tests/test_fused.py,
tests/test_speed_equivalence.py). They are not differentiable twice: a double backward
(``create_graph=True``) through a training MBConv raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module

from coatsearch.nn.tracing import fast_path_allowed

#: Bytes of batch each chunked backward pass works on at once (at least one sample), so
#: that its later operations on the chunk find it in cache and its temporaries stay small.
CHUNK_BYTES = 4 << 20

#: The environment variable that turns the path on at import: 1 (on) or 0 (off, the default).
ENV_VAR = "COATSEARCH_FUSED_TRAINING"

_ON = ("1", "true", "on", "yes")
_OFF = ("", "0", "false", "off", "no")


def _enabled_by(value: str | None) -> bool:
    """The setting an environment value asks for; an unknown value is an error, since a
    misspelt switch that silently stays off would time the wrong path."""
    text = (value or "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError(f"{ENV_VAR}={value!r}: expected 1 (on) or 0 (off)")


_enabled = _enabled_by(os.environ.get(ENV_VAR))
_grad_in_place = True


def _check_flag(name: str, value: object) -> None:
    """Refuse a non-bool: a string such as ``"0"`` would otherwise read as on."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def set_fused_training(enable: bool = True, grad_in_place: bool = True) -> None:
    """Turn the fused training path of the MBConv and the stem on or off for the process.

    ``grad_in_place=False`` keeps the fused forward and backward but never writes a result
    over a gradient a backward receives: for code that holds inner gradients in ways no
    module hook shows (see the module docstring). Off, the blocks run the plain operators.
    """
    global _enabled, _grad_in_place
    _check_flag("enable", enable)
    _check_flag("grad_in_place", grad_in_place)
    _enabled, _grad_in_place = enable, grad_in_place


def fused_training_enabled() -> bool:
    """Whether `set_fused_training` (or ``COATSEARCH_FUSED_TRAINING=1``) turned the path on."""
    return _enabled


@contextmanager
def fused_training(enable: bool = True, grad_in_place: bool = True) -> Iterator[None]:
    """`set_fused_training` for the forwards run inside the block; the previous setting
    comes back on leaving it, also on an exception."""
    previous = _enabled, _grad_in_place
    set_fused_training(enable, grad_in_place)
    try:
        yield
    finally:
        set_fused_training(*previous)


def fusion_applies(x: torch.Tensor) -> bool:
    """True where the fused training pieces are on and apply to ``x``."""
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._are_functorch_transforms_active()
        and fast_path_allowed()
    )


def hooked(*modules: nn.Module) -> bool:
    """Whether a module hook could see the tensors of ``modules``: a hook of any kind on one
    of them, or any global module hook. Such tensors, and their gradients, must be the
    plain operators' own, neither written over nor made by a fused function."""
    if (_module._global_forward_pre_hooks or _module._global_forward_hooks
            or _module._global_backward_pre_hooks or _module._global_backward_hooks):
        return True
    return any(m._forward_pre_hooks or m._forward_hooks or m._backward_pre_hooks or m._backward_hooks
               for m in modules)


def owned_grad(*consumers: nn.Module) -> bool:
    """Whether the output consumed by ``consumers`` may have its gradient written over.

    False when the path or its ``grad_in_place`` is off, or a hook could keep that
    gradient (`hooked`: a forward hook on a consumer can register a tensor hook on its
    input, a backward hook receives the gradient).
    """
    return _enabled and _grad_in_place and not hooked(*consumers)


def batch_norm_gelu(x: torch.Tensor, norm: nn.Module, grad_in_place: bool = False) -> torch.Tensor:
    """``F.gelu(norm(x))``; fused (see the module docstring) for a training BatchNorm2d
    while the path is on.

    The plain call is kept wherever ``nn.BatchNorm2d`` itself has something to say: a
    subclass, a hook (on it, or global), or an input it rejects (not 4-D, one value per
    channel).
    """
    plain = (
        type(norm) is not nn.BatchNorm2d
        or not norm.training
        or not fusion_applies(x)
        or hooked(norm)
        or x.ndim != 4
        or x.shape[0] * x.shape[2] * x.shape[3] <= 1
    )
    if plain:
        return F.gelu(norm(x))
    running_mean, running_var, momentum = _running_stats(norm)  # type: ignore[arg-type]
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
    """A dense gradient (each element its own memory, not a broadcast view). Whether anyone
    else holds it is the caller's promise (``grad_in_place``), not checked here."""
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

    ``scale`` must come from a sigmoid (or anything whose gradient is 0 where it is 0: the
    backward gives ``d scale = 0`` there). ``x`` must not be read afterwards by its caller
    (autograd raises if an operator saved it). Where `fusion_applies` this is
    `_GateInPlace`; otherwise a plain in-place multiply when nothing records a gradient,
    and the ordinary product when something does or a tracer records it.
    """
    if fusion_applies(x) and x.numel() > 0:
        return _GateInPlace.apply(x, scale, grad_in_place)
    # a traced graph (torch.jit.trace checks it by tracing again, without gradients) must
    # not depend on the grad mode: the product there
    if torch.jit.is_tracing() or (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad)):
        return x * scale
    return x.mul_(scale)


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
