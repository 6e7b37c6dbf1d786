"""Time of the analytic counting route beside the traced one, and of budget matching.

Run alone (other busy processes distort CPU timings):

    python benchmarks/flops_speed.py [--threads 2] [--big]

For coatnet-0 (the reference), a few other presets and a search-sized spec it prints the
analytic route's time (median of many calls), the traced route's (fvcore, one call, model
build included), their ratio and whether the two counts agree in every number; then the time to match each
to a FLOP target. ``--big`` also traces CoAtNet-4..7 at 224 (allocates up to ~10 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from coatsearch import NetSpec, preset
from coatsearch.budget import match_budget
from coatsearch.flops import count, count_analytic
from coatsearch.units import format_count


def small_spec() -> NetSpec:
    return NetSpec.from_layout(
        "C-C-T-T", [1, 1, 2, 2, 1], [32, 32, 64, 128, 256], image_size=32, num_classes=10,
        name="search C-C-T-T @32",
    )


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", action="store_true", help="also trace coatnet-4..7 at 224")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = ["coatnet-0", "coatnet-1", "coatnet-3", "vit-rel"]
    if args.big:
        names += ["coatnet-4", "coatnet-5", "coatnet-6", "coatnet-7"]
    specs = [preset(n) for n in names] + [small_spec()]
    count(small_spec())  # warm-up: imports fvcore, first trace

    print(f"threads={args.threads}; FLOPs are multiply-adds")
    header = f"{'spec':<22}{'FLOPs':>9}{'analytic ms':>13}{'traced s':>10}{'traced/analytic':>17}{'agree':>7}"
    print(header)
    print("-" * len(header))
    for spec in specs:
        analytic_s = median_seconds(lambda spec=spec: count_analytic(spec), 200)
        start = time.perf_counter()
        traced = count(spec, route="traced")
        traced_s = time.perf_counter() - start
        analytic = count_analytic(spec)
        # every number: FLOPs, params, activations, per stage, per operator
        agree = "yes" if dataclasses.replace(traced, route="analytic") == analytic else "NO"
        print(
            f"{spec.name:<22}{format_count(analytic.flops):>9}{analytic_s * 1e3:13.3f}"
            f"{traced_s:10.2f}{traced_s / analytic_s:16.0f}x{agree:>7}"
        )

    print()
    print(f"{'match to':<22}{'target':>9}{'by':>7}{'ms':>9}  result")
    reference = count_analytic(preset("coatnet-0")).flops
    cases = [
        (NetSpec.from_layout("C-T-T-T", [2, 2, 3, 5, 2], [64, 96, 192, 384, 768], name="C-T-T-T"), reference, "width"),
        (preset("vit-rel"), reference, "both"),
        (preset("coatnet-7"), 200e9, "width"),
        (small_spec(), 50e6, "width"),
        (small_spec(), 50e6, "depth"),
    ]
    for spec, target, by in cases:
        seconds = median_seconds(lambda spec=spec, target=target, by=by: match_budget(spec, flops=target, by=by), 5)  # type: ignore[arg-type]
        result = match_budget(spec, flops=target, by=by)  # type: ignore[arg-type]
        print(
            f"{spec.name:<22}{format_count(target):>9}{by:>7}{seconds * 1e3:9.1f}  "
            f"{result.relative_error:+.2%}{'' if result.within_tolerance else ' (missed)'}"
        )


if __name__ == "__main__":
    main()
