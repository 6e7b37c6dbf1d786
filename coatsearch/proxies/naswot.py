"""NASWOT (Mellor et al., 2021): how differently the network's activation patterns
separate the images of one batch at initialisation.

Every GELU's pre-activation is binarised (positive or not) per image; two images'
codes agree on ``c_i . c_j + (1 - c_i) . (1 - c_j)`` units, and the score is the log
determinant of that batch x batch kernel: a network whose units carve the images apart
scores higher. The pre-activations are read by forward hooks: on the norms that
`batch_norm_gelu` feeds into a GELU (a hooked BatchNorm takes the plain path, so the hook
sees what the GELU reads) and on the Transformer FFN's ``nn.GELU`` input.
"""

from __future__ import annotations

import torch
from torch import nn

from coatsearch.nn.blocks import ConvStem, MBConv
from coatsearch.proxies.base import Proxy, ProxyData, fresh
from coatsearch.spec import NetSpec


def gelu_inputs(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """``(module, pre)`` for every place a GELU reads: ``pre`` hooks the module's input
    (an ``nn.GELU``), else its output (a norm whose output goes into a GELU)."""
    found: list[tuple[nn.Module, bool]] = []
    for module in model.modules():
        if isinstance(module, ConvStem):
            found.append((module.norm1, False))
        elif isinstance(module, MBConv):
            found += [(module.expand_norm, False), (module.depthwise_norm, False)]
        elif isinstance(module, nn.GELU):
            found.append((module, True))
    return found


def _naswot(spec: NetSpec, data: ProxyData, seed: int) -> float:
    model = fresh(spec, seed)
    x, _ = data.sample()
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def record(tensor: torch.Tensor) -> None:
        codes = (tensor.detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    handles = []
    for module, pre in gelu_inputs(model):
        if pre:
            handles.append(module.register_forward_pre_hook(lambda _m, args: record(args[0])))
        else:
            handles.append(module.register_forward_hook(lambda _m, _args, out: record(out)))
    try:
        # grad on: without it the Transformer blocks take their fused inference path,
        # whose GELU is no module to hook
        with torch.enable_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else float("-inf")


NASWOT = Proxy(_naswot, "log-determinant of the batch's binarised GELU pre-activation kernel")
