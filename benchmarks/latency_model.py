"""Acceptance of the latency model: predictions against measured latency on random
networks that calibration never saw.

Run alone, on a quiet machine (other busy processes distort CPU timings):

    python benchmarks/latency_model.py [--n 100] [--rounds 7] [--threads 2] [--batch 1] [--device cpu]
    python benchmarks/latency_model.py --n 10 --rounds 3 --calibration 8     # a quick check that it runs

Calibrates a profile on ``--calibration`` random networks (the seed `coatsearch latency
calibrate` uses) or reads ``--profile``, then draws ``--n`` other random networks (random
layouts, depths, widths, head sizes, 32-224 px; another seed), measures each in ``--rounds``
interleaved rounds (median of the fastest of three calls per round) and predicts it. Prints
the share of predictions within ±10% of the measured median (the goal: 90%, 95% beyond),
Spearman's ρ (goal 0.95), the median and 90th-percentile error, the calibration time, and
the load average before and after, as one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import torch
from scipy import stats

from coatsearch.latency import Profile, calibrate, conditions, predict, random_specs, time_calls
from coatsearch.nn import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration", type=int, default=40, help="random networks to calibrate on")
    parser.add_argument("--profile", default=None, help="use this profile instead of calibrating")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    if args.profile:
        profile = Profile.load(args.profile)
        profile.check(args.device)
    else:
        profile = calibrate(random_specs(args.calibration, seed=12345), [args.batch], rounds=args.rounds,
                            device=args.device)
    calibration_s = time.perf_counter() - start
    tests = random_specs(args.n, seed=2026)
    calls = {}
    for k, spec in enumerate(tests):
        model = build(spec, device=args.device).eval()
        x = torch.randn(args.batch, spec.in_channels, spec.image_size, spec.image_size, device=args.device)
        calls[str(k)] = functools.partial(model, x)
    measured = time_calls(calls, args.rounds, args.device, seed=7)
    predicted = [predict(spec, args.batch, profile) for spec in tests]
    actual = [measured[str(k)] for k in range(len(tests))]
    errors = [p / a - 1 for p, a in zip(predicted, actual)]
    record = {
        "conditions": conditions(args.device), "batch": args.batch, "rounds": args.rounds, "networks": len(tests),
        "calibration_networks": None if args.profile else args.calibration, "calibration_s": round(calibration_s, 1),
        "profile_units": len(profile.units),
        "within_10pct": round(sum(abs(e) <= 0.10 for e in errors) / len(errors), 3),
        "spearman": round(float(stats.spearmanr(predicted, actual).statistic), 4),
        "median_abs_error": round(statistics.median(abs(e) for e in errors), 4),
        "p90_abs_error": round(sorted(abs(e) for e in errors)[int(0.9 * (len(errors) - 1))], 4),
        "measured_ms_range": [round(min(actual), 3), round(max(actual), 3)],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
