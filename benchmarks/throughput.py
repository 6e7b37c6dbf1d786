"""Train and inference images/s of coatsearch networks, beside timm's CoAtNet-0 when installed.

Run alone (other busy processes distort CPU timings):

    python benchmarks/throughput.py [--threads 2] [--steps 5]

Prints, for coatnet-0 at 224 and a small C-C-T-T at 32, batch 16, fp32, with channels_last
on and off: inference and training images/s; with timm, the same for `coatnet_0_224` and the
ratio ours/timm.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from coatsearch import NetSpec, build, preset


def small_spec() -> NetSpec:
    return NetSpec.from_layout(
        "C-C-T-T", [1, 1, 2, 2, 1], [32, 32, 64, 128, 256], image_size=32, num_classes=10
    )


def images_per_second(model: nn.Module, size: int, batch: int, steps: int, train: bool, channels_last: bool) -> float:
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    model.train(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if train else None

    def step() -> None:
        if train:
            optimizer.zero_grad(set_to_none=True)
            model(x).float().mean().backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cases: list[tuple[str, int, nn.Module, nn.Module | None]] = []
    try:
        import timm
    except ImportError:
        timm = None
        print("timm not installed: no reference column (pip install timm)")
    ref0 = timm.create_model("coatnet_0_224", num_classes=1000) if timm else None
    cases.append(("coatnet-0", 224, build(preset("coatnet-0")), ref0))
    cases.append(("small C-C-T-T", 32, build(small_spec()), None))

    print(f"threads={args.threads} batch={args.batch} steps={args.steps} fp32")
    header = f"{'model':<16}{'px':>5}{'ch_last':>9}{'mode':>7}{'ours img/s':>12}{'timm img/s':>12}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name, size, model, ref in cases:
        for channels_last in (False, True):
            for train in (False, True):
                ours = images_per_second(model, size, args.batch, args.steps, train, channels_last)
                theirs = (
                    images_per_second(ref, size, args.batch, args.steps, train, channels_last)
                    if ref is not None else None
                )
                ratio = f"{ours / theirs:8.2f}" if theirs else f"{'-':>8}"
                theirs_text = f"{theirs:12.1f}" if theirs else f"{'-':>12}"
                mode = "train" if train else "infer"
                print(f"{name:<16}{size:>5}{str(channels_last):>9}{mode:>7}{ours:12.1f}{theirs_text}{ratio}")


if __name__ == "__main__":
    main()
