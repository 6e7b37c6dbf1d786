"""One candidate's proxy score on its space's own images: what `coatsearch rank` and a
space's prefilter compute for every candidate."""

from __future__ import annotations

from typing import Any

from coatsearch.proxies import PROXIES, ProxyData, from_bundle, score
from coatsearch.search.inputs import load_trial_data
from coatsearch.train.loop import adapt_spec


def score_candidate(data_seed: int, candidate: Any, proxy: str, seed: int | None,
                    data: dict[Any, ProxyData]) -> float:
    """``proxy``'s score of one candidate (`coatsearch.search.plan.Candidate`), on the
    space's images split by ``data_seed`` (read into ``data`` once per data setting, image
    size, trainer rate and batch, and seed); ``seed`` defaults to the trainer's."""
    use_seed = candidate.train.seed if seed is None else seed
    inputs, spec = None, candidate.spec
    if PROXIES[proxy].needs_data:
        key = (candidate.data, spec.image_size, candidate.train.lr, candidate.train.batch_size, use_seed)
        bundle = load_trial_data(candidate.data, spec.image_size, data_seed)
        if key not in data:
            data[key] = from_bundle(bundle, lr=candidate.train.lr, batch_size=candidate.train.batch_size, seed=use_seed)
        inputs = data[key]
        # the network as a trial trains it: input channels and classes from the data
        spec, _ = adapt_spec(spec, bundle)
    return score(proxy, spec, inputs, use_seed)
