"""Training-free scores that rank networks before any is trained (`PROXIES`, `score`),
and the cheap-fidelity baseline they are measured against. How far each can be trusted on
our own trained networks: scripts/calibrate_proxies.py and docs/proxies.md."""

from coatsearch.proxies.base import PROXIES, Proxy, ProxyData, ProxyError, from_bundle, random_data, score

__all__ = ["PROXIES", "Proxy", "ProxyData", "ProxyError", "from_bundle", "random_data", "score"]
