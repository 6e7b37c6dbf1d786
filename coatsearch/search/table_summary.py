"""What a table of trained networks holds, as its README's generated sections.

scripts/sync_table.py rewrites them from the table's rows every time it copies them in, so
the README's counts, cost, fit and noise floor are always the committed rows'.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from coatsearch import perimage
from coatsearch.generated import markers, replace_section
from coatsearch.search.table import Entry, Table
from coatsearch.status import Status

SECTIONS = ("status", "fit", "noise")


def _cpu(entry: Entry) -> float:
    return sum(entry.seconds)


def status_markdown(table: Table, feasible: dict[str, int], todo_points: list[tuple[str, float, float]]) -> str:
    """Rows held against the grid, and the build's cost so far with a projection over
    ``todo_points``: (entry key, FLOPs, depth multiplier) of every network of the build."""
    main = [e for e in table.entries.values() if "seed" not in e.row.sampled]
    trained = [e for e in main if e.row.status != Status.INFEASIBLE]
    seeds = [e for e in table.entries.values() if "seed" in e.row.sampled and e.row.status != Status.INFEASIBLE]
    everyone = trained + seeds
    cpu = sum(_cpu(e) for e in everyone)
    wall = sum(e.row.wall_time or 0 for e in everyone)
    by_budget: dict[str, list[float]] = defaultdict(list)
    for e in everyone:
        by_budget[str(e.row.sampled.get("scale"))].append(_cpu(e))
    lines = [
        f"- networks trained: {len(trained)} of the {feasible.get('space', 0)} the main grid can train "
        f"({sum(e.row.status == Status.INFEASIBLE for e in main)} points found infeasible so far); "
        f"second seed: {len(seeds)} of {feasible.get('seeds', 0)}",
        "- statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(_count(e.row.status for e in everyone).items())),
        f"- compute so far: {cpu / 3600:.2f} CPU-hours (every epoch's recorded CPU seconds, 1 thread per trial), "
        f"{wall / 3600:.2f} hours of trial wall time at nice 19 beside other work ({wall / max(cpu, 1e-9):.1f}x)",
    ]
    if by_budget:
        means = {b: statistics.mean(v) for b, v in by_budget.items()}
        lines.append("- CPU seconds per trial by FLOP budget (`scale`): "
                     + ", ".join(f"{b}: {m:.0f} (n={len(by_budget[b])})" for b, m in sorted(means.items())))
        todo = [t for t in todo_points if t[0] not in table.entries]
        guess = _cost_model(everyone)
        left = sum(guess(flops, depth) for _, flops, depth in todo)
        lines.append(f"- projected total: {(cpu + left) / 3600:.1f} CPU-hours ({len(todo)} trainings to go, each "
                     "estimated from its FLOPs and depth by a log-linear fit of the CPU seconds of the trials so far, "
                     "over the budgets and depths they span; beyond them the estimate is low)")
    return "\n".join(lines)


def _cost_model(entries: list[Entry]) -> Callable[[float, float], float]:
    """CPU seconds of a trial from its FLOPs and depth: least squares of log seconds on log
    FLOPs and depth, over the features the trials so far span (two budgets, two depths;
    the width-matching's 2% spread in FLOPs is no span to extrapolate from), else their mean."""
    seconds = np.log([_cpu(e) for e in entries])
    flops = np.log([float(e.row.flops or 1) for e in entries])
    depth = np.array([float(e.row.sampled.get("depth_multiplier", 1)) for e in entries])
    varies = [bool(np.ptp(flops) > 0.5), bool(np.ptp(depth) >= 0.5)]
    use = [f for f, on in zip((flops, depth), varies) if on]
    design = np.column_stack([np.ones(len(entries)), *use])
    coef = np.linalg.lstsq(design, seconds, rcond=None)[0]

    def guess(f: float, d: float) -> float:
        x = [1.0] + [v for v, on in zip((math.log(f), d), varies) if on]
        return float(math.exp(np.dot(coef, x)))

    return guess


def _count(values: object) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:  # type: ignore[attr-defined]
        counts[str(value)] += 1
    return counts


def fit_markdown(table: Table) -> str:
    """Per layout and budget: validation accuracy and eval-mode fit of the training images."""
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in table.entries.values():
        if e.row.status == Status.COMPLETE and "seed" not in e.row.sampled:
            groups[(str(e.row.layout), str(e.row.sampled.get("scale")))].append(e)
    if not groups:
        return "No network trained yet."
    lines = ["| layout | scale | n | FLOPs (mean) | val acc (%) mean [min, max] | train acc, eval (%) mean [min] | "
             "CPU s per trial |", "|---|---|---|---|---|---|---|"]
    for (layout, scale), entries in sorted(groups.items()):
        acc = [100 * (e.row.val_acc or 0) for e in entries]
        fit = [100 * (e.row.train_eval_acc or 0) for e in entries]
        flops = statistics.mean(e.row.flops or 0 for e in entries) / 1e6
        lines.append(f"| {layout} | {scale} | {len(entries)} | {flops:.1f}M | {statistics.mean(acc):.1f} "
                     f"[{min(acc):.1f}, {max(acc):.1f}] | {statistics.mean(fit):.1f} [{min(fit):.1f}] | "
                     f"{statistics.mean(_cpu(e) for e in entries):.0f} |")
    return "\n".join(lines)


def noise_markdown(table: Table) -> str:
    """The noise floor: the same networks trained at two seeds."""
    pairs = []
    for e in table.entries.values():
        if "seed" in e.row.sampled and e.row.status == Status.COMPLETE:
            base = {k: v for k, v in e.row.sampled.items() if k != "seed"}
            first = table.entries.get(table.key(base))
            if first is not None and first.row.status == Status.COMPLETE:
                pairs.append((first.row, e.row))
    if not pairs:
        return ("No pairs yet: the second seed's networks (seeds.yaml) train after the main grid's first block, "
                "so the noise floor is not measured yet.")
    diffs = [100 * ((b.val_acc or 0) - (a.val_acc or 0)) for a, b in pairs]
    sd = statistics.stdev(diffs) / math.sqrt(2) if len(diffs) > 1 else float("nan")
    flips = []
    for a, b in pairs:
        ca, cb = perimage.decode(a.val_correct), perimage.decode(b.val_correct)
        if ca is not None and cb is not None and ca.fingerprint == cb.fingerprint:
            flips.append(100 * float((ca.bits != cb.bits).mean()))
    acc = statistics.mean((a.val_acc or 0) for a, _ in pairs)
    images = pairs[0][0].val_images or 0
    binomial = 100 * math.sqrt(acc * (1 - acc) / images) if images else float("nan")
    lines = [
        f"- pairs (the same network at seeds 0 and 1): {len(pairs)}",
        f"- validation accuracy, seed 1 minus seed 0: mean {statistics.mean(diffs):+.2f} pp, mean absolute "
        f"{statistics.mean(abs(d) for d in diffs):.2f} pp, largest {max(abs(d) for d in diffs):.2f} pp",
        f"- one run's standard deviation from seed alone (SD of the differences / sqrt 2): {sd:.2f} pp "
        f"(the binomial SE of one accuracy on {images} images at {100 * acc:.1f}% is {binomial:.2f} pp)",
    ]
    if flips:
        lines.append(f"- validation images one seed got right and the other wrong: {statistics.mean(flips):.1f}% "
                     f"on average (the same images, so differences between networks are paired)")
    return "\n".join(lines)


def write_readme(table: Table, feasible: dict[str, int], todo_points: list[tuple[str, float, float]]) -> None:
    """Rewrite the README's generated sections (between ``<!-- table:NAME:start -->`` and
    ``<!-- table:NAME:end -->``); a README without markers is left alone."""
    path = table.folder / "README.md"
    if not path.exists():
        return
    text = path.read_text()
    made = {"status": status_markdown(table, feasible, todo_points), "fit": fit_markdown(table), "noise": noise_markdown(table)}
    for name in SECTIONS:
        text = replace_section(text, *markers(f"table:{name}"), made[name]) or text
    Path(path).write_text(text)
