"""What `train.compile: true` (torch.compile) costs and gains per training step, on a CPU.

Run alone (other busy processes distort CPU timings):

    python benchmarks/compile_cost.py [--threads 2] [--rounds 5] [--only 32|224]

For the small C-C-T-T of spaces/nets/small-cctt.yaml at 32 px (batch 64) and CoAtNet-0 at
224 (batch 16), fp32, channels_last, AdamW: the wall time of the first compiled training
step (Dynamo + Inductor, forward and backward, with an empty Inductor cache in a temporary
folder, i.e. what a fresh trial process pays) and of the second, then steady-state seconds
per step of the eager and the compiled model in interleaved rounds (median, spread), and
from how many steps (and epochs of `--epoch-images` images) compiling pays back:
``break-even = (first compiled steps - eager steps) / (eager step - compiled step)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-cold-"))

import torch
import torch.nn.functional as F

from coatsearch import NetSpec, build, preset


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def case(name: str, spec: NetSpec, batch: int, args: argparse.Namespace) -> None:
    size = spec.image_size
    torch.manual_seed(0)
    eager = build(spec).to(memory_format=torch.channels_last).train()
    twin = build(spec).to(memory_format=torch.channels_last).train()
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin)
    x = torch.randn(batch, spec.in_channels, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch,))
    eager_step, compiled_step = step_fn(eager, x, y), step_fn(compiled, x, y)

    first_eager = timed(eager_step)
    first = timed(compiled_step)
    second = timed(compiled_step)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        order = ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")
        for which in order:
            fn = eager_step if which == "eager" else compiled_step
            times[which].append(sum(timed(fn) for _ in range(args.steps)) / args.steps)
    e, c = (statistics.median(times[k]) for k in ("eager", "compiled"))

    def spread(v: list[float]) -> str:
        return f"{(max(v) - min(v)) / statistics.median(v):.0%}"

    print(f"\n== {name}: {size} px, batch {batch}")
    print(f"first eager step          {first_eager:8.2f} s")
    print(f"first compiled step       {first:8.2f} s   (compile, cold cache)")
    print(f"second compiled step      {second:8.2f} s")
    print(f"steady eager step         {e:8.3f} s  ± {spread(times['eager'])}  {batch / e:7.1f} img/s")
    print(f"steady compiled step      {c:8.3f} s  ± {spread(times['compiled'])}  {batch / c:7.1f} img/s"
          f"   ({e / c:.2f}x)")
    overhead = first + second - 2 * e
    if c < e:
        steps = overhead / (e - c)
        per_epoch = args.epoch_images / batch
        print(f"pays back after           {steps:8.0f} steps = {steps * batch:.0f} images"
              f" = {steps / per_epoch:.1f} epochs of {args.epoch_images} images")
    else:
        print("pays back                    never (compiled steps are not faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per model per round")
    parser.add_argument("--epoch-images", type=int, default=2000)
    parser.add_argument("--only", choices=["32", "224"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={args.threads}, fp32 channels_last, AdamW, "
          f"inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    if args.only in (None, "32"):
        small = NetSpec.from_yaml((ROOT / "spaces" / "nets" / "small-cctt.yaml").read_text())
        case("small C-C-T-T", small, 64, args)
    if args.only in (None, "224"):
        case("coatnet-0", preset("coatnet-0"), 16, args.__class__(**{**vars(args), "steps": 1}))


if __name__ == "__main__":
    main()
