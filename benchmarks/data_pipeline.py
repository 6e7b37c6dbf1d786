"""Prepared datasets: decoding speed, memory a second trial adds, training from the map.

    python benchmarks/data_pipeline.py [--images 20000] [--side 256] [--size 64]

Makes (in a temporary folder, removed after) a folder of ``--images`` RGB JPEGs of
``--side`` px in 10 classes, then measures, in one run:

1. images/s of ``coatsearch data prepare --size N`` (a process pool over every core,
   JPEGs decoded at the draft scale through simplejpeg) against a single-process Pillow
   loop (open, convert, centre crop, resize): what a hand-written script would do; and,
   for reference, Pillow's draft-mode decode alone in one process, times the cores.
2. the memory a second trial process adds when the first has the data mapped: two child
   processes each load the data and touch every image; RSS, PSS and private memory from
   ``/proc/PID/smaps_rollup``, after the load minus before it. The same for
   ``data.mode: memory`` (each process decodes its own copy) for comparison.
3. training images/s of `coatsearch.fit` from the map against the same images as
   in-memory tensors (median and spread of ``--rounds`` interleaved rounds, second epoch
   timed).

Run it alone: other busy processes distort the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, images: int, side: int, classes: int = 10) -> None:
    """Photo-like JPEGs: a smooth random colour field per class plus noise, 5:4 aspect."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (classes, side // 16, side // 16, 3)).astype(np.int16)
    for i in range(images):
        c = i % classes
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        small = np.clip(base[c] + rng.integers(-40, 40, base[c].shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(small).resize((side, side * 5 // 4), Image.BILINEAR)
        noise = rng.integers(-12, 12, (side * 5 // 4, side, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        img.save(folder / f"{i:06d}.jpg", quality=90)


def pillow_loop(root: Path, size: int, limit: int) -> float:
    """Images/s of a plain single-process decode + centre crop + resize."""
    paths = sorted(root.rglob("*.jpg"))[:limit]
    start = time.perf_counter()
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            out[i] = np.asarray(im.resize((size, size), Image.BILINEAR))
    return len(paths) / (time.perf_counter() - start)


def draft_decode_only(root: Path, size: int, limit: int) -> float:
    """Images/s of Pillow's JPEG decode alone, at the reduced scale `prepare` uses (draft
    mode), in one process: no crop, resize or write. Times the cores, it bounds what a
    prepare that decodes through Pillow could do on this machine."""
    paths = sorted(root.rglob("*.jpg"))[:limit]
    start = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            scale = min(im.size) // size
            if scale >= 2:
                im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
            np.asarray(im.convert("RGB"))
    return len(paths) / (time.perf_counter() - start)


def spread(values: list[float]) -> float:
    """(max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values)


def rollup(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields


CHILD = r"""
import sys, json, torch
from coatsearch.data import load_data
source, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("ready", flush=True); sys.stdin.readline()
data = load_data(source, image_size=size, mode=mode)
total = 0
for s in (data.train, data.val, data.test):
    for start in range(0, len(s), 512):
        total += int(s.gather(torch.arange(start, min(start + 512, len(s)))).sum() > 0)
print("loaded", flush=True); sys.stdin.readline()
"""


def child_memory(source: str, size: int, mode: str) -> tuple[dict[str, int], subprocess.Popen]:
    """Memory one child process adds by loading the data (after minus before, kB)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, source, str(size), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    before = rollup(proc.pid)
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.stdout.readline()
    after = rollup(proc.pid)
    keys = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean")
    return {k: after[k] - before[k] for k in keys}, proc


def train_speed(data, rounds: int) -> float:  # type: ignore[no-untyped-def]
    from coatsearch import NetSpec, TrainConfig, fit

    # a small network, so that the input side is a visible share of each step
    spec = NetSpec.from_layout("C-C-T-T", [1, 1, 1, 1, 1], [16, 32, 48, 64, 64], image_size=data.image_size,
                               num_classes=10)
    config = TrainConfig(epochs=2, batch_size=64, threads=os.cpu_count(), amp=False)
    best = 0.0
    for _ in range(rounds):
        result = fit(spec, config, data, log=lambda _: None)
        best = max(best, result.epochs[-1].images_per_s)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=2000, help="training set of the speed comparison")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the training comparison")
    parser.add_argument("--decode-rounds", type=int, default=3, help="rounds of the decoding comparison")
    parser.add_argument("--only-decoding", action="store_true", help="stop after the decoding comparison")
    args = parser.parse_args()

    import torch

    from coatsearch.data import ImageSet, load_data
    from coatsearch.data.prepared import prepare
    from coatsearch.host import available_cpus

    work = Path(tempfile.mkdtemp(prefix="coatsearch-bench-"))
    os.environ["COATSEARCH_CACHE"] = str(work / "cache")
    try:
        root = work / "photos"
        start = time.perf_counter()
        make_folder(root, args.images, args.side)
        cpu = platform.processor() or platform.machine()
        print(f"# {time.strftime('%Y-%m-%d')}, {platform.node()}: {available_cpus()} cores, {cpu}, "
              f"python {platform.python_version()}, torch {torch.__version__}")
        print(f"made {args.images} JPEGs of {args.side}x{args.side * 5 // 4} px in 10 classes "
              f"({sum(p.stat().st_size for p in root.rglob('*.jpg')) / 1e6:.0f} MB) in {time.perf_counter() - start:.0f}s")

        # interleaved rounds: the loop (on the first 3,000 files), Pillow's draft decode alone
        # and the whole prepare command (cache removed first), the order alternating
        command = [sys.executable, "-c", "from coatsearch.cli import main; main()",
                   "data", "prepare", str(root), "--size", str(args.size)]

        def whole_command() -> float:
            shutil.rmtree(work / "cache", ignore_errors=True)
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode:
                sys.exit(result.stderr)
            return args.images / (time.perf_counter() - start)

        runs = {"loop": lambda: pillow_loop(root, args.size, min(args.images, 3000)),
                "draft": lambda: draft_decode_only(root, args.size, min(args.images, 3000)),
                "prepare": whole_command}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.decode_rounds):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                rates[name].append(runs[name]())
        loop, floor, prepared_rate = (statistics.median(rates[n]) for n in ("loop", "draft", "prepare"))
        ratios = [p / q for p, q in zip(rates["prepare"], rates["loop"])]

        def shown(name: str) -> str:
            values = rates[name]
            return (f"{statistics.median(values):8.0f} images/s (spread {spread(values):.0%}; rounds "
                    + " ".join(f"{v:.0f}" for v in values) + ")")

        print(f"\n1. decoding (median of {args.decode_rounds} interleaved rounds, spread = (max - min) / median)")
        print(f"  single-process Pillow loop (decode, crop, resize): {shown('loop')}")
        print(f"  coatsearch data prepare --size {args.size} ({available_cpus()} workers, whole command): "
              f"{shown('prepare')}")
        print(f"  prepare / loop = {prepared_rate / loop:.2f}x (medians); per round "
              + " ".join(f"{x:.2f}x" for x in ratios))
        ceiling = floor * available_cpus()
        print(f"  Pillow's draft-mode decode alone, one process: {shown('draft')}; x {available_cpus()} cores = "
              f"{ceiling:.0f} images/s = {ceiling / loop:.2f}x the loop, the most a prepare decoding through "
              "Pillow could reach here (no start-up, listing, crop or write)")
        prepared = prepare(root, args.size, progress=False)
        array_mb = prepared.images["train"].nbytes / 2**20
        print(f"  cache: {prepared.nbytes / 2**20:.0f} MiB ({array_mb:.0f} MiB image array) at {prepared.path}")
        exact = prepare(root, args.size, draft=False, progress=False)
        diff = np.abs(prepared.images["train"][:2000].astype(np.float64) - exact.images["train"][:2000]).mean()
        print(f"  draft vs full decode: mean |difference| {float(diff):.2f} of 255 per pixel")

        if args.only_decoding:
            return

        print("\n2. memory a trial process adds by loading the data (kB; after load minus before)")
        for mode in ("prepared", "memory"):
            first, p1 = child_memory(str(root), args.size, mode)
            second, p2 = child_memory(str(root), args.size, mode)
            for name, figures in (("first", first), ("second", second)):
                private = figures["Private_Clean"] + figures["Private_Dirty"]
                print(f"  {mode:8s} {name:6s}: RSS {figures['Rss']:+8d}  PSS {figures['Pss']:+8d}  "
                      f"private {private:+8d}  shared {figures['Shared_Clean']:+8d}")
            for p in (p1, p2):
                assert p.stdin is not None
                p.stdin.write("\n")
                p.stdin.flush()
                p.wait()

        print(f"\n3. training images/s (a 5-stage C-C-T-T of 16-64 channels at {args.size}px, batch 64, "
              f"{available_cpus()} threads, {args.train_images} training images, median of {args.rounds} "
              "interleaved rounds, spread = (max - min) / median)")
        mapped = load_data(str(root), image_size=args.size, train_size=args.train_images)
        t = mapped.train  # the same training split as in-memory tensors
        memory = replace(mapped, train=ImageSet(t.gather(torch.arange(len(t))).clone(), t.labels.clone(),
                                                t.mean, t.std, t.transform))
        rounds: dict[str, list[float]] = {"map": [], "memory": []}
        for r in range(args.rounds):
            order = [("map", mapped), ("memory", memory)]
            for name, data in order if r % 2 == 0 else order[::-1]:
                rounds[name].append(train_speed(data, 1))
        speeds = {name: statistics.median(values) for name, values in rounds.items()}
        for name, values in rounds.items():
            print(f"  from {'the map' if name == 'map' else 'in-memory tensors'}: {speeds[name]:.0f} images/s "
                  f"(spread {spread(values):.0%}; rounds "
                  + " ".join(f"{v:.0f}" for v in values) + ")")
        print(f"  map / memory (medians) = {speeds['map'] / speeds['memory']:.3f}x")
        print(json.dumps({"prepare_vs_loop": round(prepared_rate / loop, 2),
                          "pillow_draft_ceiling_vs_loop": round(ceiling / loop, 2),
                          "map_vs_memory_training": round(speeds["map"] / speeds["memory"], 3)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
