"""Calibrate every proxy against a table of trained networks: τ and ρ against final
validation accuracy, over all networks and within each matched FLOP budget.

    python scripts/calibrate_proxies.py tables/fmnist32 [--seed 0] [--threads 1]

Scores each complete network of the table's main space (its first training seed) with
every proxy of `coatsearch.proxies.PROXIES`, on the table's own training images, timing
each (wall and CPU seconds). Scores are kept in ``proxy_scores.csv`` beside the table, so a
rerun after more rows are committed scores only the new networks. Then writes
``proxy_calibration.csv`` (Kendall τ and Spearman ρ with bootstrap 95% intervals, per
proxy and group: ``all``, each ``scale`` value (the FLOP budgets) and each layout), a figure
(``proxy_calibration.svg`` through kaleido, when it imports) and the README's section
between ``<!-- proxies:start -->`` and ``<!-- proxies:end -->``, every number generated.
``rank-average`` is the mean rank of the three training-free proxies with the highest τ
over all networks (chosen on the same networks it is scored on, so its τ is optimistic).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from coatsearch.generated import markers, with_section
from coatsearch.proxies import PROXIES, from_bundle, score
from coatsearch.proxies.calibration import correlation, rank_average
from coatsearch.search.inputs import load_trial_data
from coatsearch.search.table import load_table
from coatsearch.spec import NetSpec
from coatsearch.status import Status

COMBINED = "rank-average"
BASELINE = "fidelity"  # trains: never one of the combined proxies
KEEP = 0.5  # the share of a budget's candidates a prefilter keeps, for `best_kept_half`


def networks(table: Any) -> list[dict[str, Any]]:
    """The main space's complete networks at its training seed: point, budget, accuracy, spec."""
    out = []
    for entry in table.entries.values():
        row = entry.row
        if row.status != Status.COMPLETE or row.seed != table.space.seed or row.spec is None:
            continue
        out.append({"point": row.point, "scale": row.sampled.get("scale"), "layout": row.layout,
                    "flops": row.flops, "n_params": row.params, "val_acc": row.val_acc, "spec": row.spec})
    return sorted(out, key=lambda r: r["point"])


def score_all(table: Any, nets: list[dict[str, Any]], path: Path, seed: int,
              max_new: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every network's score and seconds per proxy; those already in ``path`` are read, not
    scored, and at most ``max_new`` networks are scored (the rest are left out this time)."""
    done: dict[str, dict[str, str]] = {}
    if path.exists():
        with open(path, newline="") as handle:
            done = {rec["point"]: rec for rec in csv.DictReader(handle)}
    space = table.space
    bundle = load_trial_data(space.data, space.base["image_size"] if isinstance(space.base, dict) else 32, space.seed)
    data = from_bundle(bundle, lr=float(space.train.get("lr", 2e-3)), batch_size=int(space.train.get("batch_size", 32)),
                       seed=seed)
    rows: list[dict[str, Any]] = []
    new = 0
    for k, net in enumerate(nets, 1):
        old = done.get(net["point"], {})
        if any(old.get(name) in (None, "") for name in PROXIES):
            if max_new is not None and new >= max_new:
                continue
            new += 1
        rec = {key: net[key] for key in ("point", "scale", "layout", "flops", "n_params", "val_acc")}
        spec = NetSpec.from_dict(dict(net["spec"]))
        for name in PROXIES:
            if old.get(name) not in (None, ""):
                rec.update({name: float(old[name]), f"{name}_wall_s": float(old[f"{name}_wall_s"]),
                            f"{name}_cpu_s": float(old[f"{name}_cpu_s"])})
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            value = score(name, spec, data, seed)
            rec.update({name: value, f"{name}_wall_s": round(time.perf_counter() - wall, 3),
                        f"{name}_cpu_s": round(time.process_time() - cpu, 3)})
        rows.append(rec)
        print(f"{k}/{len(nets)} {net['point']}", file=sys.stderr, flush=True)
        scored = {r["point"] for r in rows}  # what an interrupted run has not reached stays in the file
        _write(path, rows + [dict(r) for p, r in done.items() if p not in scored])
    return rows, new


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def calibrate(rows: list[dict[str, Any]], resamples: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The calibration table (one record per proxy and group) and the combined proxies."""
    acc = np.array([r["val_acc"] for r in rows])
    scores = {name: np.array([r[name] for r in rows], dtype=float) for name in PROXIES}
    overall = {name: correlation(s, acc, resamples=resamples).tau for name, s in scores.items()}
    free = [n for n in PROXIES if n != BASELINE and not math.isnan(overall[n])]
    best = sorted(free, key=lambda n: -overall[n])[:3]
    groups = [("all", np.ones(len(rows), bool))]
    groups += [(f"scale={s:g}", np.array([r["scale"] == s for r in rows]))
               for s in sorted({r["scale"] for r in rows})]
    # within one layout (across budgets and shapes): does a proxy see more than the layout?
    groups += [(f"layout={lay}", np.array([r["layout"] == lay for r in rows])) for lay in sorted({r["layout"] for r in rows})]
    out = []
    for group, mask in groups:
        for name in [*PROXIES, COMBINED]:
            # the rank average is formed within the group, as a user ranks one budget's candidates
            values = rank_average([scores[b][mask] for b in best]) if name == COMBINED else scores[name][mask]
            c = correlation(values, acc[mask], resamples=resamples)
            times = [float(r[f"{name}_cpu_s"]) for r, m in zip(rows, mask) if m] if name in PROXIES else []
            walls = [float(r[f"{name}_wall_s"]) for r, m in zip(rows, mask) if m] if name in PROXIES else []
            out.append({"group": group, "proxy": name, **{k: round(v, 4) if isinstance(v, float) else v
                                                            for k, v in c.to_dict().items()},
                        "best_kept_half": best_kept(values, acc[mask], KEEP),
                        "median_cpu_s": round(statistics.median(times), 3) if times else "",
                        "max_cpu_s": round(max(times), 3) if times else "",
                        "median_wall_s": round(statistics.median(walls), 3) if walls else ""})
    return out, best


def best_kept(scores: np.ndarray, accuracy: np.ndarray, keep: float) -> int:
    """1 when the most accurate network is among the ``keep`` best by the proxy (what a
    prefilter keeping that share would search), else 0."""
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    kept = np.argsort(-finite, kind="stable")[: math.ceil(keep * len(scores))]
    return int(int(np.argmax(accuracy)) in set(kept.tolist()))


def figure(records: list[dict[str, Any]], path: Path, title: str) -> str:
    """τ with its interval per proxy and group, as SVG (kaleido) or, without it, nothing."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for group in dict.fromkeys(r["group"] for r in records):
        part = [r for r in records if r["group"] == group]
        fig.add_bar(name=group, x=[r["proxy"] for r in part], y=[r["tau"] for r in part],
                    error_y={"type": "data", "symmetric": False, "array": [r["tau_hi"] - r["tau"] for r in part],
                             "arrayminus": [r["tau"] - r["tau_lo"] for r in part]})
    fig.update_layout(barmode="group", title=title, yaxis_title="Kendall τ vs final val accuracy (95% CI)",
                      template="plotly_white", width=1000, height=450)
    try:
        fig.write_image(str(path))
    except Exception as exc:  # kaleido missing, or no Chromium for it
        return f"figure not written ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return f"figure: [{path.name}]({path.name})"


def section(records: list[dict[str, Any]], best: list[str], n: int, of: int, note: str, conditions: str) -> str:
    lines = [f"Generated by `scripts/calibrate_proxies.py` from {n} of the {of} complete networks this table held "
             f"(main space, seed 0; {conditions}). "
             f"τ and ρ against final validation accuracy, 95% bootstrap intervals (networks resampled); "
             f"`{COMBINED}` is the mean rank of {', '.join(best)} (the three training-free proxies with the highest "
             f"τ over all networks, chosen on these same networks). CPU seconds per network: median [max]. {note}", "",
             "| proxy | " + " | ".join(dict.fromkeys(f"τ {r['group']}" for r in records))
             + " | ρ all | budgets whose best network is in the proxy's top half | CPU s |",
             "|---|" + "---|" * (len({r['group'] for r in records}) + 3)]
    for name in dict.fromkeys(r["proxy"] for r in records):
        part = [r for r in records if r["proxy"] == name]
        cells = [f"{r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}] (n={r['n']})" for r in part]
        overall = part[0]
        timing = f"{overall['median_cpu_s']:.2f} [{overall['max_cpu_s']:.2f}]" if overall["median_cpu_s"] != "" else "-"
        budgets = [r for r in part if r["group"].startswith("scale=")]
        kept = f"{sum(r['best_kept_half'] for r in budgets)} of {len(budgets)}"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {overall['rho']:+.2f} [{overall['rho_lo']:+.2f}, {overall['rho_hi']:+.2f}] | {kept} | {timing} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and images of every proxy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--max-new", type=int, default=None,
                        help="score at most this many networks not scored before (0: calibrate from the saved scores)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    table = load_table(str(args.table))
    load_before = os.getloadavg()[0]
    nets = networks(table)
    rows, new = score_all(table, nets, args.table / "proxy_scores.csv", args.seed, args.max_new)
    load_after = os.getloadavg()[0]
    records, best = calibrate(rows, args.resamples)
    _write(args.table / "proxy_calibration.csv", records)
    conditions = (f"seed {args.seed}, {args.threads} thread(s), torch {torch.__version__}, "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {new} networks scored in this run, load average "
                  f"{load_before:.1f} before and {load_after:.1f} after on {os.cpu_count()} CPUs; networks scored in "
                  "an earlier run keep that run's times")
    note = figure(records, args.table / "proxy_calibration.svg", f"proxies vs trained accuracy: {table.name}, "
                  f"{len(rows)} networks")
    readme = args.table / "README.md"
    readme.write_text(with_section(readme.read_text(), *markers("proxies"),
                                   section(records, best, len(rows), len(nets), note, conditions),
                                   "## Proxies at initialisation, calibrated"))
    print(section(records, best, len(rows), len(nets), note, conditions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
