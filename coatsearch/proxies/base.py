"""What every proxy shares: the `Proxy` entry, the images it scores a network on, the
`PROXIES` registry and `score`, which seeds and builds the network a proxy looks at.

A proxy scores a network *before* training it: a number meant to rank networks the way
their trained accuracy would (higher is better for every proxy here). Each entry is a small
object: the function, whether it needs labelled images, and what it measures. Scores are
deterministic for a seed: the seed fixes the initial weights and which images are used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from coatsearch.errors import CoatsearchError
from coatsearch.registry import Registry
from coatsearch.spec import NetSpec


class ProxyError(CoatsearchError):
    """A proxy that cannot score a network (no images where it needs them, a bad setting)."""


@dataclass(frozen=True)
class ProxyData:
    """Labelled images to score on: ``images``/``labels`` a training sample (proxies at
    initialisation use its first ``batch`` images), ``val_images``/``val_labels`` what the
    cheap-fidelity baseline is evaluated on, and the trainer settings it trains with."""

    images: torch.Tensor
    labels: torch.Tensor
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    num_classes: int = 10
    lr: float = 2e-3
    batch_size: int = 32
    #: images a proxy at initialisation looks at (NASWOT's kernel is batch x batch)
    batch: int = 64

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch proxies at initialisation score on."""
        return self.images[: self.batch], self.labels[: self.batch]


def random_data(spec: NetSpec, n: int = 64, seed: int = 0, val: int = 64) -> ProxyData:
    """Gaussian images with random labels at the spec's size: for tests, and for the
    proxies that look only at the network (params, FLOPs, synflow)."""
    g = torch.Generator().manual_seed(seed)
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    return ProxyData(torch.randn(n, *shape, generator=g), torch.randint(0, spec.num_classes, (n,), generator=g),
                     torch.randn(val, *shape, generator=g), torch.randint(0, spec.num_classes, (val,), generator=g),
                     num_classes=spec.num_classes, batch=min(64, n))


ScoreFn = Callable[[NetSpec, ProxyData, int], float]


@dataclass(frozen=True)
class Proxy:
    """One proxy: ``compute(spec, data, seed) -> score`` (higher ranks first), and what it is."""

    compute: ScoreFn
    about: str
    #: True when it reads images (every proxy but params and FLOPs)
    needs_data: bool = True


#: Every proxy by name; a new one joins with ``PROXIES.register(name, Proxy(...))``.
PROXIES: Registry[Proxy] = Registry("proxy")
for _name, _ref in [("params", "counts:PARAMS"), ("flops", "counts:FLOPS"), ("synflow", "gradients:SYNFLOW"),
                    ("naswot", "naswot:NASWOT"), ("grad_norm", "gradients:GRAD_NORM"), ("snip", "gradients:SNIP"),
                    ("zico", "gradients:ZICO"), ("fidelity", "fidelity:FIDELITY")]:
    PROXIES.register(_name, f"coatsearch.proxies.{_ref}")


def score(name: str, spec: NetSpec, data: ProxyData | None = None, seed: int = 0) -> float:
    """``name``'s score of ``spec`` (`UnknownName` for a name no proxy has). ``data`` may
    be left out for proxies that read no images."""
    proxy = PROXIES[name]
    if data is None:
        if proxy.needs_data:
            raise ProxyError(f"proxy {name}: needs images to score on")
        data = random_data(spec, 2, seed, 2)
    return float(proxy.compute(spec, data, seed))


def fresh(spec: NetSpec, seed: int) -> nn.Module:
    """The network at initialisation for ``seed``, in training mode (BatchNorm on batch
    statistics, as the proxies' papers score it)."""
    from coatsearch.nn import build

    torch.manual_seed(seed)
    return build(spec).train()


def weights(model: nn.Module) -> Iterator[torch.Tensor]:
    """The weights the gradient proxies sum over: every convolution's and linear layer's
    (norms, biases and relative-bias tables left out, as NASLib's measures do)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            yield module.weight


def from_bundle(bundle: Any, *, lr: float = 2e-3, batch_size: int = 32, seed: int = 0, val_limit: int = 500) -> ProxyData:
    """`ProxyData` from a data bundle (`coatsearch.data.DataBundle`): its training
    images in an order fixed by ``seed`` (the proxies' batch is the first 64) and at most
    ``val_limit`` of its validation images (the cheap-fidelity baseline's test)."""
    order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(seed))
    images, labels = bundle.train.batch(order)
    val_images, val_labels = bundle.val.batch(torch.arange(min(val_limit, len(bundle.val))))
    return ProxyData(images, labels, val_images, val_labels, num_classes=bundle.num_classes, lr=lr,
                     batch_size=batch_size, batch=min(64, len(bundle.train)))
