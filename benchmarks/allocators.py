"""CoAtNet-0 training step with and without the fused training path, under glibc, jemalloc
and tcmalloc, in interleaved rounds.

Run alone, on a quiet machine (check `uptime`: other busy processes distort CPU timings):

    python benchmarks/allocators.py [--rounds 5] [--steps 3] [--warmup 2]
                                    [--image-size 224] [--batch 16] [--threads 2]

The fused path (`coatsearch.nn.set_fused_training`) exists to avoid the page faults glibc
pays for fresh large allocations; an allocator that keeps freed memory mapped may avoid
them as well, so the path is worth keeping only if it still wins under one. Six
configurations: {plain, fused} x {glibc, jemalloc, tcmalloc}. Each run of a configuration
is its own Python process, since an allocator has to be preloaded (``LD_PRELOAD``) when the
process starts; the path is chosen the same way, with ``COATSEARCH_FUSED_TRAINING``. The
process builds the model, runs ``--warmup`` untimed steps, then times ``--steps`` steps
(SGD, fp32, channels_last, as in benchmarks/throughput.py); its seconds per step are their
mean. Round r runs every configuration once, in an order rotated by r, so a burst of load
hits all of them alike. The table gives, per configuration, the median of the rounds, their
min and max, the spread ((max - min) / median), minor page faults per step, and the speed
against "plain, glibc": its median seconds over this one's, and the median of the same
ratio taken within each round. An allocator whose library is not found is skipped with a
line saying so (Debian/Ubuntu: ``apt-get install libjemalloc2 libtcmalloc-minimal4``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from throughput import make_step, spread  # benchmarks/ is on sys.path: the script's own folder

#: Shared objects to try for each allocator, in order; `ldconfig -p` first, then these paths.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
KNOWN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
REFERENCE = "plain, glibc"


@dataclass
class Config:
    """One configuration: the path, and the library to preload (None: glibc's malloc)."""

    fused: bool
    allocator: str
    library: str | None

    @property
    def name(self) -> str:
        return f"{'fused' if self.fused else 'plain'}, {self.allocator}"


@dataclass
class Runs:
    """What the rounds measured for one configuration, one value per round."""

    seconds: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)


def ldconfig_paths() -> dict[str, list[str]]:
    """Library name -> paths, from the dynamic linker's cache (empty if ldconfig is absent).

    64-bit entries (``(libc6,x86-64)``, ``(libc6,AArch64)``) come first: a 32-bit copy
    named alike would be refused by the loader of a 64-bit Python.
    """
    try:
        text = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    entries: dict[str, list[tuple[bool, str]]] = {}
    for line in text.splitlines():
        left, arrow, path = line.strip().partition(" => ")
        if arrow:
            name, _, flags = left.partition(" ")
            entries.setdefault(name, []).append(("," not in flags, path.strip()))
    return {name: [path for _, path in sorted(found)] for name, found in entries.items()}


def find_library(allocator: str, cache: dict[str, list[str]]) -> str | None:
    """The first of the allocator's libraries that exists: in the cache, then in known folders."""
    for name in LIBRARIES[allocator]:
        candidates = [*cache.get(name, []), *(str(Path(folder) / name) for folder in KNOWN_DIRS)]
        for path in candidates:
            if Path(path).exists():
                return path
    return None


def configs() -> list[Config]:
    """The six configurations, less those whose allocator is not installed (said on stdout)."""
    cache = ldconfig_paths()
    found: list[Config] = []
    for allocator in ("glibc", *LIBRARIES):
        library = None if allocator == "glibc" else find_library(allocator, cache)
        if allocator != "glibc" and library is None:
            print(f"skipped: {allocator} (none of {', '.join(LIBRARIES[allocator])} found) - "
                  f"'plain, {allocator}' and 'fused, {allocator}' not run")
            continue
        found += [Config(False, allocator, library), Config(True, allocator, library)]
    return found


def child_env(config: Config, threads: int) -> dict[str, str]:
    """The environment of a measuring process: only this config's preload, its path setting."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if config.library:
        env["LD_PRELOAD"] = config.library
    env["COATSEARCH_FUSED_TRAINING"] = "1" if config.fused else "0"
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_config(config: Config, args: argparse.Namespace) -> dict[str, float]:
    """One measuring process for ``config``; its last stdout line is a JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker",
               "--allocator", config.allocator, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--image-size", str(args.image_size), "--batch", str(args.batch), "--threads", str(args.threads)]
    done = subprocess.run(command, env=child_env(config, args.threads), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{config.name}: measuring process failed ({done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rotated(items: list[Config], r: int) -> list[Config]:
    """``items`` started at position r (mod its length): round r's order."""
    k = r % len(items)
    return items[k:] + items[:k]


def measure(found: list[Config], args: argparse.Namespace) -> dict[str, Runs]:
    """Every configuration once per round, in rotated order."""
    runs = {c.name: Runs() for c in found}
    for r in range(args.rounds):
        for config in rotated(found, r):
            result = run_config(config, args)
            runs[config.name].seconds.append(result["seconds_per_step"])
            runs[config.name].faults.append(result["faults_per_step"])
            print(f"  round {r + 1}/{args.rounds}: {config.name:<16}{result['seconds_per_step']:9.3f} s/step",
                  flush=True)
    return runs


def report(runs: dict[str, Runs]) -> None:
    """The table: seconds per step (median, min, max, spread), faults, speed against the reference."""
    ref = runs.get(REFERENCE)
    print(f"\n{'config':<18}{'median s/step':>14}{'min':>9}{'max':>9}{'spread':>8}{'faults/step':>13}"
          f"{'speed vs ' + REFERENCE:>24}{'per-round':>11}")
    for name, r in runs.items():
        median = statistics.median(r.seconds)
        line = (f"{name:<18}{median:14.3f}{min(r.seconds):9.3f}{max(r.seconds):9.3f}{spread(r.seconds):8.0%}"
                f"{statistics.median(r.faults):13.0f}")
        if ref is not None:
            per_round = statistics.median(a / b for a, b in zip(ref.seconds, r.seconds))
            line += f"{statistics.median(ref.seconds) / median:23.2f}x{per_round:10.2f}x"
        print(line)
    print("speed vs plain, glibc: its median s/step over this one's (> 1: faster); per-round: the "
          "median of that ratio within each round")


def mapped(library: str) -> bool:
    """Whether a shared object of that file name is mapped into this process."""
    name = Path(library).name.split(".so")[0] + ".so"
    return name in Path("/proc/self/maps").read_text()


def check_process(allocator: str) -> None:
    """Refuse to time a process whose allocator or path is not what its configuration says."""
    from coatsearch.nn import fused_training_enabled

    wanted = os.environ.get("COATSEARCH_FUSED_TRAINING") == "1"
    if fused_training_enabled() != wanted:
        raise SystemExit(f"the fused training path is {'off' if wanted else 'on'}, expected {'on' if wanted else 'off'}")
    for other, names in LIBRARIES.items():
        loaded = any(mapped(n) for n in names)
        if loaded != (other == allocator):
            state = "not loaded" if other == allocator else "loaded"
            raise SystemExit(f"{other} is {state} in a '{allocator}' process (LD_PRELOAD={os.environ.get('LD_PRELOAD')})")


def worker(args: argparse.Namespace) -> None:
    """Build CoAtNet-0, warm up, time the steps; print one JSON line."""
    import torch

    from coatsearch import build, preset

    check_process(args.allocator)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(preset("coatnet-0").replace(image_size=args.image_size)).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    step = make_step(model, x, train=True)
    for _ in range(args.warmup):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    print(json.dumps({"seconds_per_step": seconds, "faults_per_step": faults}))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (oneDNN caches, heap)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allocator", default="glibc", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be at least 1, --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    print(f"torch {torch.__version__}, CoAtNet-0 training step, {args.image_size} px, batch {args.batch}, fp32 "
          f"channels_last, threads={args.threads}, {args.rounds} rounds of {args.warmup} + {args.steps} steps "
          f"per process")
    found = configs()
    for config in found:
        print(f"  {config.name:<16} LD_PRELOAD={config.library or '(none)'}")
    report(measure(found, args))


if __name__ == "__main__":
    main()
