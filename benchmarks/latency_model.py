"""Acceptance of the latency model: predictions against measured latency on random
networks that calibration never saw, and widths matched to a latency target.

Run alone, on a quiet machine (other busy processes distort CPU timings):

    python benchmarks/latency_model.py [--n 100] [--rounds 7] [--threads 1] [--batch 1] [--device cpu]
    python benchmarks/latency_model.py --threads 1 --match 10 --match 20 --write   # and record it
    python benchmarks/latency_model.py --n 10 --rounds 3 --calibration 8     # a quick check that it runs

Calibrates a profile on ``--calibration`` random networks (the seed `coatsearch latency
calibrate` uses) or reads ``--profile``, then draws ``--n`` other random networks (random
layouts, depths, widths, head sizes, 32-224 px; another seed) and predicts each. It times
them twice, in ``--rounds`` interleaved rounds (median of the fastest of three calls per
round): in the calibration's own rounds (the model's error alone; not with ``--profile``)
and again after it in a new process, as a search or `coatsearch latency predict` uses a
profile (the model's error plus whatever changed the networks' times in between); also in
the calibrating process itself after it, where networks run slower once the calibration's
units are freed. Each ``--match`` target (ms) has the first 30 of those networks matched
to it by width through the profile (as ``budget: {latency_ms: X}`` does; those no width
brings within 5% are left out), timed in the new process. Prints the
share of predictions within ±10% of the measured median (the goal: 90%, 95% beyond),
Spearman's ρ (goal 0.95), the median (and signed) and 90th-percentile error, for both
timings, how far the times moved between them (``drift``), the calibration time, the
matched networks' measured latency against each target (goal: within 5%; also with the
drift taken out) and the load average before and after, as one JSON object. ``--write``
adds the record to latency_model.json and rewrites RESULTS.md's section from all of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coatsearch  # noqa: F401  (before torch: OpenMP then waits as in a coatsearch run)

# isort: split
import torch
from scipy import stats

from coatsearch.budget import BudgetError
from coatsearch.generated import markers, with_section
from coatsearch.latency import Profile, calibrate, conditions, predict, random_specs, time_calls
from coatsearch.latency.budget import AIM, match_latency
from coatsearch.nn import build
from coatsearch.spec import NetSpec

HERE = Path(__file__).resolve().parent
MATCHED = 30


def _share(errors: list[float], bound: float) -> float:
    return round(sum(abs(e) <= bound for e in errors) / len(errors), 3) if errors else float("nan")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def accuracy(predicted: list[float], measured: list[float]) -> dict[str, float]:
    """How close predictions come to measured medians."""
    errors = [p / m - 1 for p, m in zip(predicted, measured)]
    return {"within_10pct": _share(errors, 0.10),
            "spearman": round(float(stats.spearmanr(predicted, measured).statistic), 4),
            "median_abs_error": round(statistics.median(abs(e) for e in errors), 4),
            "median_error": round(statistics.median(errors), 4),
            "p90_abs_error": round(_quantile([abs(e) for e in errors], 0.9), 4)}


def _call(spec: NetSpec, batch: int, device: str) -> Callable[[], Any]:
    model = build(spec, device=device).eval()
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, device=device)
    return functools.partial(model, x)


def time_in_fresh_process(specs: dict[str, NetSpec], args: argparse.Namespace) -> dict[str, float]:
    """Median ms of each network timed in a new Python process, as a search or `coatsearch
    latency predict` meets a profile: in the calibrating process, after its units are freed,
    the same networks run 10-20% slower (measured in ``later_same_process``), which a new
    process does not inherit."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({key: spec.to_dict() for key, spec in specs.items()}, f)
    try:
        command = [sys.executable, __file__, "--time", f.name, "--rounds", str(args.rounds),
                   "--batch", str(args.batch), "--device", args.device]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    return json.loads(done.stdout)


def time_only(path: str, args: argparse.Namespace) -> None:
    """``--time FILE``: time the networks of FILE (name -> spec) and print their medians."""
    specs = {key: NetSpec.from_dict(data) for key, data in json.loads(Path(path).read_text()).items()}
    calls = {key: _call(spec, args.batch, args.device) for key, spec in specs.items()}
    print(json.dumps(time_calls(calls, args.rounds, args.device, seed=7)))


def matched_networks(tests: list[NetSpec], targets: list[float], batch: int,
                     profile: Profile) -> dict[str, tuple[float, NetSpec, float]]:
    """``"TARGET/k" -> (target, network, its predicted ms)`` for each of the first `MATCHED` test networks a
    width brings within 5% of each target (the others are infeasible, as in a search)."""
    out = {}
    for target in targets:
        for k, spec in enumerate(tests[:MATCHED]):
            try:
                out[f"{target:g}/{k}"] = (target, *match_latency(spec, target, batch, profile, 0.05))
            except BudgetError:
                continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration", type=int, default=40, help="random networks to calibrate on")
    parser.add_argument("--profile", default=None, help="use this profile instead of calibrating")
    parser.add_argument("--match", type=float, action="append", default=[], help="a latency target (ms) to match")
    parser.add_argument("--write", action="store_true", help="keep the record and rewrite RESULTS.md's section")
    parser.add_argument("--time", default=None, help=argparse.SUPPRESS)  # the fresh process's own mode
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time:
        time_only(args.time, args)
        return
    load_before = os.getloadavg()[0]
    tests = random_specs(args.n, seed=2026)
    test_calls = {f"test{k}": _call(spec, args.batch, args.device) for k, spec in enumerate(tests)}
    start = time.perf_counter()
    if args.profile:
        profile = Profile.load(args.profile)
        profile.check(args.device)
        first = None
    else:
        profile = calibrate(random_specs(args.calibration, seed=12345), [args.batch], rounds=args.rounds,
                            device=args.device, alongside=test_calls)
        alongside = profile.notes.pop("alongside_ms")
        first = [alongside[f"test{k}"] for k in range(len(tests))]
    calibration_s = time.perf_counter() - start
    matched = matched_networks(tests, args.match, args.batch, profile)
    same_process = time_calls(test_calls, args.rounds, args.device, seed=7)
    later = time_in_fresh_process({**{f"test{k}": spec for k, spec in enumerate(tests)},
                                   **{key: spec for key, (_, spec, _) in matched.items()}}, args)
    predicted = [predict(spec, args.batch, profile) for spec in tests]
    second = [later[f"test{k}"] for k in range(len(tests))]
    record: dict[str, Any] = {
        "conditions": conditions(args.device), "batch": args.batch, "rounds": args.rounds, "networks": len(tests),
        "calibration_networks": None if args.profile else args.calibration, "calibration_s": round(calibration_s, 1),
        "profile_units": len(profile.units),
        "measured_ms_range": [round(min(second), 3), round(max(second), 3)],
    }
    if first is not None:  # timed in the calibration's own rounds: the model's error, the change in the times apart
        record |= accuracy(predicted, first)
        drift = [b / a - 1 for a, b in zip(first, second)]
        record["drift"] = {"median": round(statistics.median(drift), 4),
                           "p10": round(_quantile(drift, 0.1), 4), "p90": round(_quantile(drift, 0.9), 4)}
    record["later"] = accuracy(predicted, second)  # timed again after, in a new process, as a profile is used
    record["later_process"] = "fresh"
    record["later_same_process"] = accuracy(predicted, [same_process[f"test{k}"] for k in range(len(tests))])
    # the test networks' own drift between the two timings, taken out of the matched ones' times
    speed = 1 + record["drift"]["median"] if first is not None else None
    for target in args.match:
        times = [later[key] for key, (t, _, _) in matched.items() if t == target]
        entry: dict[str, Any] = {"target_ms": target, "matched": len(times), "of": min(MATCHED, len(tests)),
                                 "aim": AIM}
        aimed = [got / t - 1 for t, _, got in matched.values() if t == target]
        if aimed:  # how far the matcher's own prediction sits from the target
            entry["predicted_median_abs_error"] = round(statistics.median(abs(e) for e in aimed), 4)
        for name, factor in (("", 1.0), ("_drift_out", speed)):
            if factor is not None and times:
                off = [ms / factor / target - 1 for ms in times]
                entry[f"within_5pct{name}"] = _share(off, 0.05)
                entry[f"within_10pct{name}"] = _share(off, 0.10)
                entry[f"median_abs_error{name}"] = round(statistics.median(abs(e) for e in off), 4)
        record.setdefault("matched", []).append(entry)
    record["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(record, indent=1))
    if args.write:
        write(record)


def write(record: dict[str, Any]) -> None:
    """Add ``record`` to the others and rewrite RESULTS.md's section from all of them:
    every run is kept, so the table shows how much runs on one machine differ."""
    kept = HERE / "latency_model.json"
    records = json.loads(kept.read_text()) if kept.exists() else []
    records.append(record)
    kept.write_text(json.dumps(records, indent=1) + "\n")
    results = HERE / "RESULTS.md"
    start, end = markers("latency_model")
    results.write_text(with_section(results.read_text(), start, end, markdown(records),
                                    "## The latency model (latency_model.py)"))


def _matched(m: dict[str, Any]) -> str:
    if not m["matched"]:
        return f"{m['target_ms']:g} ms: none"
    aim = f"aimed within {m['aim']:.0%}" if "aim" in m else "one width factor"
    within_10 = f", {m['within_10pct']:.0%} within 10%" if "within_10pct" in m else ""
    text = (f"{m['target_ms']:g} ms, {aim}: {m['within_5pct']:.0%} of {m['matched']}{within_10} (median off "
            f"{100 * m['median_abs_error']:.1f}%")
    if "predicted_median_abs_error" in m:
        text += f", predicted {100 * m['predicted_median_abs_error']:.1f}%"
    if "within_5pct_drift_out" in m:
        text += (f"; drift taken out: {m['within_5pct_drift_out']:.0%}, median off "
                 f"{100 * m['median_abs_error_drift_out']:.1f}%")
    return text + ")"


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| device | threads | batch | calibration: networks, units, seconds | networks predicted | "
             "within ±10% | Spearman ρ | error: median (signed), 90th pct | timed again after, in a new process "
             "and in the calibrating one: within ±10%, median error (signed) | drift between the two timings: "
             "median [10th, 90th pct] | matched to a target, "
             "timed in a new process: within 5% | load average | date |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pct(value: float, sign: str = "") -> str:
        return f"{100 * value:{sign}.1f}%"

    for r in records:
        c, later, drift = r["conditions"], r["later"], r.get("drift")
        matched = "; ".join(_matched(m) for m in r.get("matched", [])) or "–"
        same = (f"**{r['within_10pct']:.0%}** | {r['spearman']:.3f} | {pct(r['median_abs_error'])} "
                f"({pct(r['median_error'], '+')}), {pct(r['p90_abs_error'])}") if "within_10pct" in r else "– | – | –"
        again = f"{later['within_10pct']:.0%}, {pct(later['median_error'], '+')}"
        if r.get("later_process") == "fresh":  # earlier records timed again in the calibrating process only
            own = r["later_same_process"]
            again = f"new: {again}; same: {own['within_10pct']:.0%}, {pct(own['median_error'], '+')}"
        else:
            again = f"same: {again}"
        moved = f"{pct(drift['median'], '+')} [{pct(drift['p10'], '+')}, {pct(drift['p90'], '+')}]" if drift else "–"
        lines.append(
            f"| {c['device']} | {c['threads']} | {r['batch']} | {r['calibration_networks']}, {r['profile_units']}, "
            f"{r['calibration_s']:.0f} s | {r['networks']} ({r['measured_ms_range'][0]:.1f}–"
            f"{r['measured_ms_range'][1]:.1f} ms) | {same} | {again} | {moved} | {matched} | {r['load_average'][0]:.2f} → "
            f"{r['load_average'][1]:.2f} | {r['date']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
