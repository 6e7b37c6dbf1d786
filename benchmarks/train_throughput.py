"""Training images/s of `coatsearch.fit` against a bare forward/backward loop on the same model.

Run alone (other busy processes distort CPU timings):

    python benchmarks/train_throughput.py [--threads 2] [--train-size 2000] [--rounds 5]

Both sides train the same spec (spaces/nets/small-cctt.yaml, adapted to the data) on the
same in-memory Fashion-MNIST images at 32x32, batch 64, AdamW, channels_last, fp32. The
bare loop is what a hand-written script would do: pre-normalised tensors, shuffled index
batches, forward, cross entropy, backward, step, with PyTorch's default AdamW (and, as a
second reference, the fused AdamW that `fit` uses). The trainer adds its schedule, label
smoothing, gradient clipping, metrics, the non-finite check and batch assembly. Each side
runs two epochs and is timed on the second; rounds interleave the four (the order rotates
every round) and the table gives the median of the rounds, their spread ((max - min) /
median) and the best; overhead = 1 - trainer / bare on the medians. A spread wider than the
overhead means the machine was too busy to tell: rerun with more rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from coatsearch import (
    DataBundle,
    NetSpec,
    TrainConfig,
    build,
    fit,
    load_data,
    load_spec,
)
from coatsearch.train import adapt_spec

SPEC = Path(__file__).resolve().parent.parent / "spaces" / "nets" / "small-cctt.yaml"


def bare_loop(spec: NetSpec, data: DataBundle, batch_size: int, seed: int, fused: bool = False) -> float:
    """Images/s of the second of two epochs of a plain training loop (``fused``: with
    the fused AdamW that `fit` uses, instead of PyTorch's default)."""
    torch.manual_seed(seed)
    model = build(spec).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05, fused=fused)
    x_all, y_all = data.train.batch(torch.arange(len(data.train)))
    generator = torch.Generator().manual_seed(seed)
    speed = 0.0
    for _ in range(2):
        order = torch.randperm(len(y_all), generator=generator)
        start = time.perf_counter()
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = x_all[idx].contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y_all[idx]).backward()
            optimizer.step()
        speed = len(order) / (time.perf_counter() - start)
    return speed


def trainer(spec: NetSpec, data: DataBundle, batch_size: int, seed: int) -> float:
    """Images/s of `fit`'s second epoch (its own measure of the training phase)."""
    config = TrainConfig(epochs=2, batch_size=batch_size, seed=seed)
    return fit(spec, config, data, log=lambda _: None).epochs[-1].images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    plain = load_data("fashion-mnist", image_size=32, train_size=args.train_size)
    light = load_data("fashion-mnist", image_size=32, train_size=args.train_size, augment="light")
    spec, _ = adapt_spec(load_spec(SPEC), plain)
    jobs = {
        "bare loop": lambda r: bare_loop(spec, plain, args.batch, r),
        "bare loop, fused": lambda r: bare_loop(spec, plain, args.batch, r, fused=True),
        "fit, augment none": lambda r: trainer(spec, plain, args.batch, r),
        "fit, augment light": lambda r: trainer(spec, light, args.batch, r),
    }
    names = list(jobs)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            runs[name].append(jobs[name](r))

    print(f"threads={args.threads} batch={args.batch} train images={len(plain.train)} "
          f"rounds={args.rounds} spec={spec.layout} {sum(p.numel() for p in build(spec).parameters()) / 1e6:.2f}M params")
    bare = statistics.median(runs["bare loop"])
    print(f"{'loop':<22}{'median img/s':>13}{'spread':>8}{'best':>8}{'all rounds':>34}{'overhead':>10}")
    for name, speeds in runs.items():
        median = statistics.median(speeds)
        overhead = "" if name == "bare loop" else f"{1 - median / bare:10.1%}"
        rounds = " ".join(f"{s:.0f}" for s in speeds)
        spread = (max(speeds) - min(speeds)) / median
        print(f"{name:<22}{median:13.1f}{spread:8.0%}{max(speeds):8.0f}{rounds:>34}{overhead}")
    fused = statistics.median(runs["bare loop, fused"])
    for reference, speed in (("bare", bare), ("bare, fused", fused)):
        print(f"fit / {reference} (medians): none {statistics.median(runs['fit, augment none']) / speed:.3f}, "
              f"light {statistics.median(runs['fit, augment light']) / speed:.3f}")


if __name__ == "__main__":
    main()
