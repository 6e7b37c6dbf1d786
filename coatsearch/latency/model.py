"""Timing units on this device (`calibrate`) and predicting a network's latency from a
profile (`predict`): the sum of its units' times, each the profile's own measurement where
it timed that unit and its kind's fit elsewhere, corrected to a whole network's time by
the profile's scale and overhead for the batch.

Times are inference latencies (eval mode, ``torch.inference_mode``, float32), as
`scripts/table_latency.py` measures whole networks: every unit visited in interleaved
rounds (a new order each round; one warm-up call, then the fastest of three), the median
over rounds kept, so a burst of load on a shared machine spreads over all units instead of
landing on one.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from coatsearch.latency.profile import LatencyError, Profile, conditions
from coatsearch.latency.units import FEATURES, Unit, features, units
from coatsearch.spec import NetSpec


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(calls: Mapping[str, Callable[[], Any]], rounds: int, device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Median milliseconds of each call over ``rounds`` interleaved rounds (each round: a
    warm-up, then the fastest of three)."""
    if rounds < 1:
        raise LatencyError(f"rounds: expected at least 1, got {rounds}")
    times: dict[str, list[float]] = {key: [] for key in calls}
    rng = random.Random(seed)
    with torch.inference_mode():
        for _ in range(rounds):
            order = list(calls)
            rng.shuffle(order)
            for key in order:
                calls[key]()
                best = float("inf")
                for _ in range(3):
                    _sync(device)
                    start = time.perf_counter()
                    calls[key]()
                    _sync(device)
                    best = min(best, time.perf_counter() - start)
                times[key].append(1000 * best)
    return {key: statistics.median(values) for key, values in times.items()}


def _call(module: Any, x: torch.Tensor | None) -> Callable[[], Any]:
    return lambda: module(x)


def calibrate(specs: Iterable[NetSpec], batches: Iterable[int], *, rounds: int = 7, whole: int = 40,
              device: str = "cpu", log: Callable[[str], None] | None = None,
              alongside: Mapping[str, Callable[[], Any]] | None = None) -> Profile:
    """Time every distinct unit of ``specs`` at each batch size, and the first ``whole`` of
    the networks end to end at each, in the same interleaved rounds, and fit each kind's
    latency on its units. The whole networks give the scale and overhead: four leave them
    to chance, forty hold them; in the units' rounds, a change in the machine's speed
    during calibration moves units and networks alike.

    ``alongside``: other calls timed in the same rounds, their medians returned in the
    profile's ``notes["alongside_ms"]``: how a benchmark measures networks under the very
    conditions the profile was made in (timed again in this process after a calibration,
    the same networks run several percent slower, a change a new process does not have).
    """
    from coatsearch.nn import build

    specs, batches = list(specs), list(batches)
    # checked before anything is built: building every unit of forty networks takes a while
    if rounds < 1:
        raise LatencyError(f"rounds: expected at least 1, got {rounds}")
    if not batches or min(batches) < 1:
        raise LatencyError(f"batch: expected one or more batch sizes of at least 1, got {batches}")
    found: dict[str, Unit] = {}
    nets: dict[str, tuple[NetSpec, int]] = {}
    for batch in batches:
        for k, spec in enumerate(specs):
            for unit in units(spec, batch, device):
                found.setdefault(unit.key, unit)
            if k < whole:
                nets[f"net{k}@{batch}"] = (spec, batch)
    if log:
        log(f"timing {len(found)} units and {len(nets)} whole networks, {rounds} rounds")
    calls = {key: _call(u.module, u.x) for key, u in found.items()}
    for name, (spec, batch) in nets.items():
        model = build(spec, device=device).eval()
        calls[name] = _call(model, torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size,
                                               device=device))
    if set(calls) & set(alongside or {}):
        raise LatencyError("alongside: a name that a unit or network of the calibration already has")
    timed = time_calls({**calls, **(alongside or {})}, rounds, device)
    measured = {key: timed[key] for key in found}
    whole_ms = {name: timed[name] for name in nets}
    profile = Profile(conditions(device), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      units={key: round(ms, 5) for key, ms in measured.items()})
    profile.fits = fit_kinds(list(found.values()), measured)
    pairs: dict[str, list[tuple[float, float]]] = {}
    for name, (spec, batch) in nets.items():
        parts = sum(measured[u.key] for u in units(spec, batch))
        pairs.setdefault(str(batch), []).append((parts, whole_ms[name]))
    for size, seen in pairs.items():
        profile.scale[size], profile.overhead_ms[size] = whole_network_fit(seen)
    profile.notes = {"rounds": rounds, "units": len(found), "networks": len(nets), "specs": len(specs),
                     "features": list(FEATURES)}
    if alongside:
        profile.notes["alongside_ms"] = {name: timed[name] for name in alongside}
    return profile


def whole_network_fit(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """``(scale, overhead)`` with whole ≈ scale x (sum of units) + overhead over the timed
    networks (non-negative, least relative error): units timed alone run with their weights
    and input in cache, a whole network does not. One network: scale 1 and the difference."""
    from scipy.optimize import nnls

    if len(pairs) < 2:
        parts, whole = pairs[0]
        return 1.0, round(max(0.0, whole - parts), 5)
    a = np.array([[parts, 1.0] for parts, _ in pairs])
    times = np.array([w for _, w in pairs])
    (scale, overhead), _ = nnls(a / times[:, None], np.ones(len(pairs)))
    return round(float(scale), 5), round(float(overhead), 5)


def fit_kinds(found: list[Unit], measured: dict[str, float]) -> dict[str, list[float]]:
    """Per kind, non-negative coefficients of `features` that minimise the squared
    *relative* error over the kind's timed units."""
    from scipy.optimize import nnls

    fits = {}
    for kind in sorted({u.kind for u in found}):
        mine = [u for u in found if u.kind == kind]
        a = np.array([features(u) for u in mine])
        ms = np.array([measured[u.key] for u in mine])
        coef, _ = nnls(a / ms[:, None], np.ones(len(mine)))
        fits[kind] = [float(c) for c in coef]
    return fits


def predict(spec: NetSpec, batch: int, profile: Profile) -> float:
    """Predicted milliseconds of one call of ``spec`` at ``batch`` on the profile's device;
    `LatencyError` at a batch the profile was not calibrated at (`Profile.check_batch`)."""
    profile.check_batch(batch)
    total = 0.0
    for unit in units(spec, batch):
        if unit.key in profile.units:
            total += profile.units[unit.key]
            continue
        coef = profile.fits.get(unit.kind)
        if coef is None:
            raise LatencyError(f"latency profile has no {unit.kind} unit to estimate from; calibrate with "
                               f"networks that have one")
        if len(coef) != len(FEATURES):
            raise LatencyError(f"latency profile: its {unit.kind} fit has {len(coef)} coefficients where this "
                               f"version has {len(FEATURES)} features; calibrate again")
        total += float(np.dot(coef, features(unit)))
    return profile.scale.get(str(batch), 1.0) * total + profile.overhead_ms.get(str(batch), 0.0)
