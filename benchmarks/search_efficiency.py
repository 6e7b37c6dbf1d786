"""Search efficiency, measured on the replay: how much compute each search strategy spends
to find the table's front of validation accuracy against FLOPs.

Replays each strategy (random, grid, TPE, NSGA-II; each without early stopping and with
ASHA, Hyperband, MO-ASHA and learning-curve stopping) over a table of trained networks
(`coatsearch.search.table`), for ``--seeds`` sampler seeds each, one simulated worker, and
measures against the table itself:

- the anytime curve of normalized hypervolume (the hypervolume of the full-fidelity trials
  found so far over the table's, both bounded by the table's worst accuracy and 1.05x its
  largest FLOPs) and of the mean shortfall of the best accuracy found at each FLOP budget
  against the table's best there, against the compute spent (the recorded CPU seconds of
  every epoch replayed, in units of the compute of training every network once);
- the compute needed to reach 95% of the table's hypervolume (median and interquartile
  range over seeds, and how many seeds reached it);
- how often each budget's best network in the table was among the trials found at full
  fidelity, and how often every network on the table's front was;
- for learning-curve stopping, the error of the final validation accuracy predicted from
  the first 25% of the epochs (`curve_mae`: each network predicted from the others).

Non-grid strategies run twice as many trials as the table has networks (their samplers may
draw a network again; a real search would train it again, and so does the replay); a grid
runs each network once. A partial table is replayed over the part of the space it holds
whole (values of the outermost parameter whose every point is in the table).

    python benchmarks/search_efficiency.py [--table fmnist32] [--seeds 30] [--only tpe+curve,...] [--write]

Every number says which table it came from (its rows and their digest): the table grows
while it is built, and the command reruns as it is.

``--write`` puts the tables into benchmarks/RESULTS.md (between its markers) and the
figure into benchmarks/search_efficiency.svg. It also times a 100-trial replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from coatsearch.analysis.fronts import hypervolume_2d, non_dominated
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.curves import FAMILIES, predict
from coatsearch.search.jsonl_ledger import read_ledger
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.table import Table, load_table
from coatsearch.status import Status

HERE = Path(__file__).resolve().parent
KINDS = ("none", "asha", "hyperband", "moasha", "curve")
STRATEGIES = [(s, kind) for s in ("random", "grid", "tpe", "nsga2") for kind in KINDS]
#: Each scheduler's settings (8-epoch table: Hyperband gets 4 brackets; curve predicts from 25%).
SCHEDULING = {
    "none": {"kind": "none"},
    "asha": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    "hyperband": {"kind": "hyperband", "grace_period": 1, "reduction_factor": 2},
    "moasha": {"kind": "moasha", "grace_period": 1, "reduction_factor": 2},
    "curve": {"kind": "curve", "grace_period": 2, "threshold": 0.05, "top": 1},
}
NAMES = {"none": "", "asha": " + ASHA", "hyperband": " + Hyperband", "moasha": " + MO-ASHA", "curve": " + curve"}
MAXIMIZE = (True, False)  # val_acc up, flops down
GRID_POINTS = 121  # compute fractions the anytime curves are read at (0 .. MAX_FRACTION)
MAX_FRACTION = 1.5
START, END = "<!-- search_efficiency:start -->", "<!-- search_efficiency:end -->"


@dataclasses.dataclass(frozen=True)
class Reference:
    """What the table holds over the replayed subspace: its networks, hypervolume, the
    bounds hypervolumes are taken against, and each budget's best network."""

    points: dict[str, TrialRow]
    reference: tuple[float, float]
    hypervolume: float
    compute: float  # seconds to train every network once
    best: dict[str, tuple[str, float]]  # budget -> (point, val_acc)
    budget_param: str
    front: frozenset[str]  # the points on the table's front of val_acc against FLOPs
    curves: dict[str, list[float]]  # point -> val_acc after each epoch


def whole_subspace(table: Table) -> dict[str, list]:
    """The part of the table's grid held whole with the most trained networks, as a
    space's parameter choices: a subset of values for each parameter whose every
    combination is in the table (ties go to more FLOP budgets, then more points). The whole
    table when it is complete."""
    params = {name: d.grid_values() for name, d in table.space.params.items()}
    names = list(params)
    status = {}
    for combo in itertools.product(*params.values()):
        entry = table.entries.get(table.key(dict(zip(names, combo))))
        if entry is not None:
            status[combo] = entry.row.status
    best: tuple[tuple[int, int, int], dict[str, list]] | None = None
    subsets = [[list(c) for k in range(1, len(v) + 1) for c in itertools.combinations(v, k)] for v in params.values()]
    budget = names.index("scale") if "scale" in names else 0
    for choice in itertools.product(*subsets):
        points = list(itertools.product(*choice))
        if any(p not in status for p in points):
            continue
        score = (sum(status[p] == Status.COMPLETE for p in points), len(choice[budget]), len(points))
        if best is None or score > best[0]:
            best = (score, dict(zip(names, choice)))
    if best is None or best[0][0] == 0:
        raise SystemExit(f"table {table.name}: no part of its grid is trained whole yet")
    return best[1]


def reference(table: Table, params: dict[str, list], budget_param: str) -> Reference:
    entries = [table.lookup(dict(zip(params, combo))) for combo in itertools.product(*params.values())]
    entries = [e for e in entries if e.row.status == Status.COMPLETE]
    points = {e.row.point: e.row for e in entries}
    acc = np.array([r.val_acc for r in points.values()], dtype=float)
    flops = np.array([r.flops for r in points.values()], dtype=float)
    ref = (float(acc.min()), float(flops.max() * 1.05))
    hv = hypervolume_2d(np.column_stack([acc, flops]), MAXIMIZE, ref)
    compute = float(sum(sum(e.seconds) for e in entries))
    best: dict[str, tuple[str, float]] = {}
    for row in points.values():
        budget = str(row.sampled[budget_param])
        if budget not in best or (row.val_acc or 0) > best[budget][1]:
            best[budget] = (row.point, float(row.val_acc or 0))
    front = frozenset(p for p, on in zip(points, non_dominated(np.column_stack([acc, flops]), MAXIMIZE)) if on)
    curves = {e.row.point: [float(h.get("val_acc")) for h in e.epochs] for e in entries}
    return Reference(points, ref, hv, compute, best, budget_param, front, curves)


def plan_for(table: Table, params: dict[str, list], sampler: str, kind: str, trials: int) -> SearchPlan:
    space = table.space.to_dict()
    space.update(study="efficiency", backend="replay", table=str(table.folder), sampler=sampler, trials=trials,
                 concurrency=1, params={name: {"choices": values} for name, values in params.items()},
                 early_stopping=SCHEDULING[kind])
    from coatsearch.space import space_from_dict

    return compile_space(space_from_dict(space), check_data=False)


def replay(plan: SearchPlan, seed: int, out: Path) -> list[TrialRow]:
    seeded = dataclasses.replace(plan, space=plan.space.model_copy(update={"seed": seed}))
    run_study(seeded, out, console=Console(file=io.StringIO()))
    return read_ledger(out)


def anytime(rows: list[TrialRow], ref: Reference, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, set[str]]:
    """Normalized hypervolume and mean best-accuracy shortfall (pp) at each compute
    fraction of ``at``; the fraction where 95% of the hypervolume was reached (inf if
    never); the points found at full fidelity."""
    ended = sorted((r for r in rows if r.clock_end is not None), key=lambda r: (r.clock_end, r.trial))
    found: list[tuple[float, float]] = []
    best: dict[str, float] = {}
    steps: list[tuple[float, float, float]] = [(0.0, 0.0, _shortfall(best, ref))]
    reached, points = float("inf"), set()
    for row in ended:
        if row.status == Status.COMPLETE and row.fidelity == row.max_fidelity:
            found.append((float(row.val_acc or 0), float(row.flops or 0)))
            points.add(row.point)
            budget = str(row.sampled[ref.budget_param])
            best[budget] = max(best.get(budget, 0.0), float(row.val_acc or 0))
        hv = hypervolume_2d(np.array(found).reshape(-1, 2), MAXIMIZE, ref.reference) / ref.hypervolume if found else 0.0
        fraction = float(row.clock_end or 0) / ref.compute
        steps.append((fraction, hv, _shortfall(best, ref)))
        if hv >= 0.95 and reached == float("inf"):
            reached = fraction
    xs = np.array([s[0] for s in steps])
    index = np.searchsorted(xs, at, side="right") - 1
    return np.array([steps[i][1] for i in index]), np.array([steps[i][2] for i in index]), reached, points


def _shortfall(best: dict[str, float], ref: Reference) -> float:
    """Mean over budgets of the table's best accuracy minus the best found (pp; a budget
    with nothing found counts its whole best)."""
    return float(np.mean([100 * (acc - best.get(b, 0.0)) for b, (_, acc) in ref.best.items()]))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile, each one of the values (so a seed that
    never got there, inf, stays inf rather than averaging into a number)."""
    q1, med, q3 = np.percentile(np.array(values, dtype=float), [25, 50, 75], method="nearest")
    return float(q1), float(med), float(q3)


def _fraction(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "not reached"


def label(sampler: str, kind: str) -> str:
    return f"{sampler}{NAMES[kind]}"


def curve_mae(ref: Reference, fraction: float = 0.25) -> dict[str, tuple[float, float, int]]:
    """Mean absolute error (pp) and 95%-interval coverage of the final validation accuracy
    predicted from the first ``fraction`` of the epochs, each network predicted with the
    table's other networks as the finished curves: the ensemble, its two halves, and the
    last value seen as the naive guess."""
    curves = [c for c in ref.curves.values() if len(c) == max(map(len, ref.curves.values()))]
    epochs = len(curves[0])
    seen = max(1, round(fraction * epochs))
    out: dict[str, tuple[float, float, int]] = {}
    for name, families, peers in (("ensemble", tuple(FAMILIES), True), ("finished curves only", (), True),
                                  ("parametric families only", tuple(FAMILIES), False)):
        errors, covered = [], []
        for i, curve in enumerate(curves):
            others = [c for j, c in enumerate(curves) if j != i] if peers else []
            predicted = predict(curve[:seen], epochs, others, families, ceiling=1.0)
            if predicted is not None:
                errors.append(abs(predicted[0] - curve[-1]))
                covered.append(abs(predicted[0] - curve[-1]) <= 1.96 * predicted[1])
        out[name] = (100 * float(np.mean(errors)) if errors else float("nan"),
                     float(np.mean(covered)) if covered else float("nan"), len(errors))
    out["last value seen"] = (100 * float(np.mean([abs(c[seen - 1] - c[-1]) for c in curves])), float("nan"), len(curves))
    out["_seen"] = (float(seen), float(epochs), len(curves))
    return out


def table_size(table: Table) -> str:
    """The table's rows, counted and digested, so that each number names the table it came from."""
    files = sorted(table.folder.glob("*.jsonl"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:10]
    rows = sum(len(f.read_text().splitlines()) for f in files)
    return f"{rows} rows ({', '.join(f.name for f in files)}; sha256 {digest})"


def measure(table: Table, seeds: int, only: list[str] | None = None) -> tuple[Reference, dict, dict[str, list], int]:
    params = whole_subspace(table)
    budget_param = "scale" if "scale" in params else next(iter(params))
    ref = reference(table, params, budget_param)
    networks = len(ref.points)
    at = np.linspace(0, MAX_FRACTION, GRID_POINTS)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler, kind in STRATEGIES:
            if only and f"{sampler}+{kind}" not in only:
                continue
            plan = plan_for(table, params, sampler, kind, networks if sampler == "grid" else 2 * networks)
            hvs, shorts, reach, found, spent, took, fronts, errors = [], [], [], [], [], [], [], []
            for seed in range(seeds):
                start = time.perf_counter()
                rows = replay(plan, seed, Path(tmp) / f"{sampler}-{kind}-{seed}")
                took.append(time.perf_counter() - start)
                hv, short, reached, points = anytime(rows, ref, at)
                hvs.append(hv)
                shorts.append(short)
                reach.append(reached)
                found.append({b: p in points for b, (p, _) in ref.best.items()})
                fronts.append(len(ref.front & points) / len(ref.front))
                spent.append(sum(r.wall_time or 0 for r in rows) / ref.compute)
                errors += [abs(r.curve_prediction - ref.points[r.point].val_acc) for r in rows  # type: ignore[operator]
                           if r.curve_prediction is not None and r.point in ref.points]
            results[label(sampler, kind)] = dict(hv=np.array(hvs), short=np.array(shorts), reach=reach, found=found,
                                                 spent=spent, seconds=statistics.median(took), trials=plan.space.trials,
                                                 front=fronts, errors=errors)
            print(f"{label(sampler, kind):<22} median {statistics.median(took):.2f} s per replay", flush=True)
    return ref, results, params, networks


def speed(table: Table, params: dict[str, list], rounds: int = 5) -> dict[str, tuple[float, float, float]]:
    """Seconds for a 100-trial replay (compiling the space, replaying, writing the run's
    files), in interleaved rounds: min, median, max per sampler."""
    times: dict[str, list[float]] = {"random": [], "tpe": [], "nsga2": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            for sampler in times:
                start = time.perf_counter()
                plan = plan_for(table, params, sampler, "none", 100)
                replay(plan, k, Path(tmp) / f"{sampler}-{k}")
                times[sampler].append(time.perf_counter() - start)
    return {s: (min(t), statistics.median(t), max(t)) for s, t in times.items()}


# --------------------------------------------------------------------------- output
def markdown(table: Table, ref: Reference, results: dict, params: dict[str, list], networks: int, seeds: int,
             speeds: dict[str, tuple[float, float, float]], mae: dict[str, tuple[float, float, int]], size: str) -> str:
    cut = {n: v for n, v in params.items() if len(v) < len(table.space.params[n].grid_values())}
    scope = ("the whole table" if not cut else "the part of the table trained so far, "
             + ", ".join(f"{n} in {v}" for n, v in cut.items()) + " (the build is not finished)")
    lines = [
        f"Table `{table.name}` at {size}, replayed over {scope}: {networks} trained networks, "
        f"{len(ref.front)} on its front, "
        f"{ref.compute / 3600:.2f} CPU-hours to train each once (the unit of compute below), {seeds} seeds per "
        "strategy, one simulated worker. Hypervolume of validation accuracy against FLOPs, bounded by the table's "
        f"worst accuracy ({ref.reference[0]:.3f}) and 1.05x its largest FLOPs, as a fraction of the table's own. "
        "Grid walks the same order for every seed. Non-grid strategies run "
        f"{2 * networks} trials, grid {networks}. Early stopping on validation accuracy: ASHA, Hyperband "
        "(4 brackets) and MO-ASHA (validation accuracy and FLOPs) with grace 1 epoch and reduction factor 2; "
        "curve from epoch 2 (25%), stopping below 5% probability of beating the best finished network no larger "
        "in FLOPs.",
        "",
        "| strategy | compute to 95% HV (median) | IQR | seeds reaching 95% | final HV (median) | compute spent (median) "
        "| front found at full fidelity (mean) | seeds finding the whole front | seeds keeping every budget's best | "
        + " | ".join(f"best at {ref.budget_param} {b} found" for b in ref.best) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(ref.best),
    ]
    for name, r in results.items():
        reached = [x for x in r["reach"] if np.isfinite(x)]
        q1, med, q3 = quartiles(r["reach"])
        medtext, iqr = _fraction(med), f"{_fraction(q1)}–{_fraction(q3)}"
        found = [f"{100 * np.mean([f[b] for f in r['found']]):.0f}%" for b in ref.best]
        every = sum(all(f.values()) for f in r["found"])
        whole = sum(x == 1.0 for x in r["front"])
        lines.append(f"| {name} | {medtext} | {iqr} | {len(reached)}/{len(r['reach'])} | "
                     f"{np.median(r['hv'][:, -1]):.3f} | {statistics.median(r['spent']):.2f} | "
                     f"{100 * np.mean(r['front']):.0f}% | {whole}/{len(r['front'])} | {every}/{len(r['found'])} | "
                     + " | ".join(found) + " |")
    seen, epochs, count = mae.pop("_seen")
    lines += ["", f"Learning-curve prediction of the final validation accuracy from the first {seen:.0f} of "
              f"{epochs:.0f} epochs, each of the {count} networks predicted with the other networks' curves as the "
              "finished ones (mean absolute error; share of finals inside the predicted 95% interval):", "",
              "| predictor | MAE (pp) | inside 95% interval | networks predicted |", "|---|---|---|---|"]
    for name, (error, coverage, n) in mae.items():
        cover = f"{100 * coverage:.0f}%" if np.isfinite(coverage) else "—"
        lines.append(f"| {name} | {error:.2f} | {cover} | {n} |")
    for name, r in results.items():
        if r["errors"]:
            lines.append(f"\nIn the `{name}` replays, the predictions the scheduler last made (at the epoch it "
                         f"stopped a trial, or its last before the end) were off by {100 * np.mean(r['errors']):.2f} pp "
                         f"on average ({len(r['errors'])} predictions over {seeds} seeds).")
    lines += ["", "Compute in units of training every network of the table once (recorded CPU seconds of every "
              "epoch replayed). ![anytime curves](search_efficiency.svg)", "",
              "Replay speed, a 100-trial search over the same space (compiling the space, replaying, writing the "
              "run's files), 5 interleaved rounds, min / median / max seconds, on 2 CPU cores shared with other "
              f"work (load average {os.getloadavg()[0]:.1f} at the end):", ""]
    lines += [f"- {s}: {lo:.2f} / {med:.2f} / {hi:.2f} s" for s, (lo, med, hi) in speeds.items()]
    return "\n".join(lines)


DASHES = {"": "", "ASHA": "5,3", "Hyperband": "2,2", "MO-ASHA": "8,3,2,3", "curve": "1,3"}


def _style(name: str) -> tuple[str, str]:
    """A strategy's sampler and its early stopping's name."""
    sampler, _, kind = name.partition(" + ")
    return sampler, kind


def svg(results: dict) -> str:
    """Two panels: median normalized hypervolume and median best-accuracy shortfall
    against compute, each strategy a line (its early stopping a dash pattern), its IQR shaded."""
    width, pad = 980, 50
    rows = (len(results) + 4) // 5
    height = 360 + 16 * rows
    colors = {"random": "#1f77b4", "grid": "#7f7f7f", "tpe": "#d62728", "nsga2": "#2ca02c"}
    at = np.linspace(0, MAX_FRACTION, GRID_POINTS)
    panels: list[tuple[str, str, float, float]] = [("normalized hypervolume", "hv", 0.0, 1.0),
              ("best accuracy's shortfall per budget (pp, clipped at 10)", "short", 0.0, 10.0)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    panel_w = (width - 3 * pad) / 2
    for k, (title, key, lo, hi) in enumerate(panels):
        x0, y0, h = pad + k * (panel_w + pad), 30, 360 - 110
        top = hi

        def sx(v: float, x0: float = x0) -> float:
            return x0 + panel_w * v / MAX_FRACTION

        def sy(v: float, y0: float = y0, top: float = top, h: float = h, lo: float = lo) -> float:
            return y0 + h * (1 - (v - lo) / (top - lo or 1))

        parts.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{h}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 - 10}" text-anchor="middle" font-size="13">{title}</text>')
        for t in np.linspace(0, MAX_FRACTION, 7):
            parts.append(f'<text x="{sx(t):.1f}" y="{y0 + h + 15}" text-anchor="middle">{t:.2f}</text>')
        for t in np.linspace(lo, top, 6):
            parts.append(f'<text x="{x0 - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + h + 32}" text-anchor="middle">'
                     'compute (x training every network once)</text>')
        for name, r in results.items():
            sampler, kind = _style(name)
            q1, med, q3 = np.minimum(np.percentile(r[key], [25, 50, 75], axis=0), top)
            band = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at, q3))
            band += " " + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at[::-1], q1[::-1]))
            parts.append(f'<polygon points="{band}" fill="{colors[sampler]}" opacity="0.05"/>')
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at, med))
            dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES.get(kind) else ""
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colors[sampler]}" stroke-width="1.6"{dash}/>')
    for i, name in enumerate(results):
        sampler, kind = _style(name)
        x, y = pad + 185 * (i % 5), 360 - 30 + 16 * (i // 5)
        dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES.get(kind) else ""
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{colors[sampler]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 26}" y="{y + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write(text: str, figure: str) -> None:
    results = HERE / "RESULTS.md"
    body = results.read_text()
    section = f"{START}\n{text}\n{END}"
    if START in body:
        head, _, rest = body.partition(START)
        body = head + section + rest.partition(END)[2]
    else:
        body = (body.rstrip("\n") + "\n\n## Search efficiency on the replay (search_efficiency.py)\n\n"
                f"`python benchmarks/search_efficiency.py --write` ({time.strftime('%Y-%m-%d')}).\n\n{section}\n")
    results.write_text(body)
    (HERE / "search_efficiency.svg").write_text(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="fmnist32")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated SAMPLER+KIND (e.g. tpe+curve,random+none)")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md's section and the figure")
    args = parser.parse_args()
    table = load_table(args.table)
    size = table_size(table)  # as read now: the table may grow while the replays run
    ref, results, params, networks = measure(table, args.seeds, [o for o in args.only.split(",") if o] or None)
    speeds = speed(table, params)
    text = markdown(table, ref, results, params, networks, args.seeds, speeds, curve_mae(ref), size)
    print(text)
    if args.write:
        write(text, svg(results))


if __name__ == "__main__":
    main()
