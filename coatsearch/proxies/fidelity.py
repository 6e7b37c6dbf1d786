"""The cheap-fidelity baseline: validation accuracy after a fraction of an epoch.

Not a proxy at initialisation but what the proxies have to beat to be worth their
name: the network trained for ``FRACTION`` of an epoch of the given training images
(AdamW at the trainer's rate, constant, its batch size, the order fixed by the seed), then
scored on the validation images in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coatsearch.proxies.base import Proxy, ProxyData, ProxyError, fresh
from coatsearch.spec import NetSpec

#: Share of one epoch of the training images the baseline trains for.
FRACTION = 0.25


def fidelity_accuracy(spec: NetSpec, data: ProxyData, seed: int, fraction: float = FRACTION) -> float:
    """Validation accuracy (0-1) after ``fraction`` of an epoch of ``data.images``."""
    if data.val_images is None or data.val_labels is None:
        raise ProxyError("proxy fidelity: needs validation images")
    model = fresh(spec, seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=data.lr, weight_decay=0.0)
    n = data.images.shape[0]
    steps = max(1, round(fraction * n / data.batch_size))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for step in range(steps):
        index = order[(step * data.batch_size) % n:][: data.batch_size]
        if index.numel() < 2:  # BatchNorm needs two images
            index = order[: data.batch_size]
        optimiser.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.images[index]), data.labels[index]).backward()
        optimiser.step()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, data.val_images.shape[0], 256):
            logits = model(data.val_images[start:start + 256])
            correct += int((logits.argmax(1) == data.val_labels[start:start + 256]).sum())
    return correct / data.val_images.shape[0]


FIDELITY = Proxy(fidelity_accuracy, f"validation accuracy after {FRACTION:g} of an epoch of training")
