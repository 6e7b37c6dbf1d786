"""The baselines: parameter and FLOP counts, from the spec alone (`coatsearch.flops.count_analytic`)."""

from __future__ import annotations

from coatsearch.flops import count_analytic
from coatsearch.proxies.base import Proxy, ProxyData
from coatsearch.spec import NetSpec


def _params(spec: NetSpec, data: ProxyData, seed: int) -> float:
    return float(count_analytic(spec).params)


def _flops(spec: NetSpec, data: ProxyData, seed: int) -> float:
    return float(count_analytic(spec).flops)


PARAMS = Proxy(_params, "trainable parameters (analytic count)", needs_data=False)
FLOPS = Proxy(_flops, "multiply-adds of one image (analytic count)", needs_data=False)
