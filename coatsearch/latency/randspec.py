"""Random networks of the family for calibrating and checking a latency model: random
layouts, depths, widths, head sizes and resolutions from 32 to 224 px.

Widths run from 8 to 768 and include multiples of 8 that are not powers of two: a latency
budget matches networks by scaling their widths, so the profile must have seen widths
such as 40, 88 or 632."""

from __future__ import annotations

import random

from coatsearch.spec import NetSpec

SIZES = (32, 64, 96, 128, 160, 192, 224)
LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T")


def random_spec(rng: random.Random, sizes: tuple[int, ...] = SIZES) -> NetSpec:
    """One random network: up to 64 px the stem and S1 keep the resolution (as the
    fmnist32 table's networks), above it both halve it, as the paper's do."""
    size = rng.choice(sizes)
    small = size <= 64
    head_dim = rng.choice((16, 32))
    base = rng.choice((8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96))
    widths = [base * m for m in (1, 2, 4, 8)]
    widths = [-(-w // head_dim) * head_dim if i > 0 else w for i, w in enumerate(widths)]
    blocks = [2, rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 2)]
    return NetSpec.from_layout(
        rng.choice(LAYOUTS), blocks, [rng.choice((16, 32, 64)) if not small else 16, *widths],
        strides=[1 if small else 2, 2, 2, 2], image_size=size, stem_stride=1 if small else 2,
        head_dim=head_dim, expansion=rng.choice((2.0, 4.0)), num_classes=10)


def random_specs(n: int, seed: int, sizes: tuple[int, ...] = SIZES) -> list[NetSpec]:
    rng = random.Random(seed)
    return [random_spec(rng, sizes) for _ in range(n)]
