"""Proxies from one backward pass at initialisation: synflow, grad-norm, SNIP and ZiCo.

Each sums over the weights of every convolution and linear layer (`weights`). synflow
needs no images: it passes an all-ones input through the network with every weight made
positive, in float64 and with BatchNorm in eval mode (at initialisation an identity), so
the score is a property of the architecture and its initial weight magnitudes (Tanaka et
al., 2020). grad-norm (the summed L2 norms of the loss gradients) and SNIP (the summed
``|w * dL/dw|``, Lee et al., 2019) use one labelled batch. ZiCo (Li et al., 2023) splits
the batch in two and, per layer, sums each weight's mean absolute gradient over the two
halves divided by its standard deviation, then adds the layers' logarithms: high and
steady gradients rank first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from coatsearch.proxies.base import Proxy, ProxyData, fresh, weights
from coatsearch.spec import NetSpec


def _synflow(spec: NetSpec, data: ProxyData, seed: int) -> float:
    model = fresh(spec, seed).double().eval()
    with torch.no_grad():
        for w in model.parameters():
            w.abs_()
    ones = torch.ones(1, spec.in_channels, spec.image_size, spec.image_size, dtype=torch.float64)
    model(ones).sum().backward()
    total = sum(float((w.detach() * w.grad).abs().sum()) for w in weights(model) if w.grad is not None)
    return math.log(total) if total > 0 else float("-inf")


def _loss_grads(spec: NetSpec, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight, gradient)`` of every conv/linear weight after one cross-entropy backward."""
    model = fresh(spec, seed)
    F.cross_entropy(model(x), y).backward()
    return [(w.detach(), w.grad.detach()) for w in weights(model) if w.grad is not None]


def _grad_norm(spec: NetSpec, data: ProxyData, seed: int) -> float:
    return sum(float(g.norm()) for _, g in _loss_grads(spec, *data.sample(), seed))


def _snip(spec: NetSpec, data: ProxyData, seed: int) -> float:
    return sum(float((w * g).abs().sum()) for w, g in _loss_grads(spec, *data.sample(), seed))


def _zico(spec: NetSpec, data: ProxyData, seed: int) -> float:
    x, y = data.sample()
    half = x.shape[0] // 2
    halves = [_loss_grads(spec, x[:half], y[:half], seed), _loss_grads(spec, x[half:], y[half:], seed)]
    total = 0.0
    for (_, g1), (_, g2) in zip(*halves):
        stacked = torch.stack([g1, g2]).double()
        mean_abs, std = stacked.abs().mean(0), stacked.std(0, unbiased=False)
        nonzero = std > 0
        ratio = float((mean_abs[nonzero] / std[nonzero]).sum())
        if ratio > 0:
            total += math.log(ratio)
    return total


SYNFLOW = Proxy(_synflow, "log of the synaptic flow: sum |w * dR/dw| for an all-ones input through |weights|",
                needs_data=False)
GRAD_NORM = Proxy(_grad_norm, "summed L2 norms of the loss gradients of every weight, one batch")
SNIP = Proxy(_snip, "summed |w * dL/dw| (connection sensitivity), one batch")
ZICO = Proxy(_zico, "sum over layers of log(sum of mean |grad| / std of grad), two half-batches")
