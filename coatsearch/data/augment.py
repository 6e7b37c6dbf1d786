"""Batch augmentation on float image tensors in [0, 1], without torchvision.

``light`` is the CIFAR recipe: a random crop from a zero-padded image (1/8 of the side)
and a horizontal flip. ``randaugment`` adds RandAugment (Cubuk et al., 2020): every image
gets ``n`` operations drawn uniformly from a fixed list, each at magnitude ``m`` out of 30
with a random sign. No installed library offers it without torchvision, so it is kept
here, small: the geometric operations share one ``affine_grid``/``grid_sample`` per round
and the colour operations are a few tensor expressions each.

All randomness comes from the ``generator`` passed in, drawn on the CPU, so a seeded run
augments identically on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from coatsearch.data.images import BatchTransform

AUGMENTATIONS = ("none", "light", "randaugment")


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop of a zero-padded image (pad = side/8) and a horizontal flip (p = 0.5)."""
    batch, _, height, width = x.shape
    pad = max(1, min(height, width) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(height, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, :]
    flip = (_uniform(batch, generator) < 0.5).to(x.device)
    cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    out = padded[torch.arange(batch, device=x.device)[:, None, None], :, rows, cols]
    return out.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- RandAugment
def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _geometric(kind: str, s: torch.Tensor) -> torch.Tensor:
    """Affine matrices (output -> input coordinates) for signed magnitudes ``s`` in [-1, 1]."""
    theta = torch.zeros(len(s), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if kind == "rotate":
        angle = s * math.radians(30.0)
        theta[:, 0, 0], theta[:, 0, 1] = angle.cos(), -angle.sin()
        theta[:, 1, 0], theta[:, 1, 1] = angle.sin(), angle.cos()
    elif kind == "shear_x":
        theta[:, 0, 1] = s * 0.3
    elif kind == "shear_y":
        theta[:, 1, 0] = s * 0.3
    elif kind == "translate_x":
        theta[:, 0, 2] = s * 0.45 * 2  # grid coordinates span 2 per image side
    elif kind == "translate_y":
        theta[:, 1, 2] = s * 0.45 * 2
    return theta


def _autocontrast(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    return ((x - low) / (high - low).clamp_min(1e-3)).clamp(0, 1)


def _view(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.to(x).view(-1, 1, 1, 1)


_COLOUR: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, s: x,
    "autocontrast": _autocontrast,
    "brightness": lambda x, s: (x * (1 + 0.9 * _view(s, x))).clamp(0, 1),
    "contrast": lambda x, s: (
        (x - x.mean(dim=(1, 2, 3), keepdim=True)) * (1 + 0.9 * _view(s, x))
        + x.mean(dim=(1, 2, 3), keepdim=True)
    ).clamp(0, 1),
    "solarize": lambda x, s: torch.where(x >= 1 - _view(s.abs(), x), 1 - x, x),
    "posterize": lambda x, s: torch.floor(
        x * 255 / 2 ** (4 * _view(s.abs(), x)).round()
    ) * 2 ** (4 * _view(s.abs(), x)).round() / 255,
    "invert": lambda x, s: 1 - x,
}
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
RANDAUGMENT_OPS = tuple(_COLOUR) + _GEOMETRIC


def rand_augment(
    x: torch.Tensor, generator: torch.Generator | None, n: int = 2, m: float = 9.0
) -> torch.Tensor:
    """RandAugment: ``n`` random operations per image at magnitude ``m`` (of 30)."""
    batch = x.shape[0]
    strength = m / 30.0
    for _ in range(n):
        ops = torch.randint(0, len(RANDAUGMENT_OPS), (batch,), generator=generator)
        sign = torch.where(_uniform(batch, generator) < 0.5, -1.0, 1.0)
        signed = sign * strength
        out = x.clone()
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        for k, name in enumerate(RANDAUGMENT_OPS):
            chosen = (ops == k).nonzero().flatten()
            if not len(chosen):
                continue
            if name in _COLOUR:
                on = chosen.to(x.device)
                out[on] = _COLOUR[name](x[on], signed[chosen])
            else:
                theta[chosen] = _geometric(name, signed[chosen])
        moved = (ops >= len(_COLOUR)).nonzero().flatten()
        if len(moved):
            on = moved.to(x.device)
            out[on] = _affine(x[on], theta[moved])
        x = out
    return x


def crop_flip_randaugment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``light`` followed by RandAugment (a named function, so a data bundle pickles)."""
    return rand_augment(random_crop_flip(x, generator), generator)


def make_transform(kind: str) -> BatchTransform | None:
    """The batch transform for an augmentation name (``None`` for ``none``)."""
    if kind == "none":
        return None
    if kind == "light":
        return random_crop_flip
    if kind == "randaugment":
        return crop_flip_randaugment
    raise ValueError(f"augment: expected one of {', '.join(AUGMENTATIONS)}, got {kind!r}")
