"""Inference and training images/s of CoAtNet-0 at 224 beside timm's, in interleaved rounds.

Run alone, on a quiet machine (check `uptime`: other busy processes distort CPU timings):

    python benchmarks/throughput.py [--threads 2] [--batch 16] [--rounds 3] [--steps 2]
                                    [--nchw] [--original] [--no-stages] [--no-small]

What it measures, all in one process with one torch: coatsearch ``coatnet-0``; with timm,
``MaxxVit(model_cfgs['coatnet_0'])`` with ``conv_cfg.stride_mode='1x1'`` (the paper's stride
placement, the same FLOPs as ours) and ``coatnet_0_224`` (stride on the depthwise conv, +10%
FLOPs); with ``--original``, the frozen pre-optimisation modules of tests/reference_nn.py.
Batch 16, fp32, channels_last (``--nchw`` to turn it off). Every round runs each model in
turn (the order rotates each round), so a burst of load hits all of them alike; the table
gives the median of the rounds and their spread ((max - min) / median), and ratios of
medians. Then the per-stage inference time (ms per batch, same interleaving) and the small
32x32 C-C-T-T of spaces/nets/small-cctt.yaml, ours against the original modules.

timm is optional: without it the timm columns read "not installed". timm 1.0.31 imports only
beside torch 2.14.1 and torchvision 0.29.1, not beside the project's pinned torch 2.13.0, so
the comparison runs in a separate environment:

    python3 -m venv /work/bench-venv && . /work/bench-venv/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 timm==1.0.31
    pip install -e . --no-deps && pip install pydantic pyyaml numpy rich
    python benchmarks/throughput.py --original
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coatsearch import NetSpec, build, preset


@dataclass
class Entry:
    name: str
    model: nn.Module
    stages: list[nn.Module] = field(default_factory=list)  # stem first


def small_spec() -> NetSpec:
    return NetSpec.from_yaml((ROOT / "spaces" / "nets" / "small-cctt.yaml").read_text())


def original_model(spec: NetSpec) -> nn.Module | None:
    try:
        from tests import reference_nn
    except ImportError:
        return None
    return reference_nn.CoAtNet(spec)


def coatsearch_entries(spec: NetSpec, with_original: bool) -> list[Entry]:
    torch.manual_seed(0)
    ours = build(spec)
    entries = [Entry("coatsearch", ours, [ours.stem, *ours.stages])]
    if with_original:
        original = original_model(spec)
        if original is None:
            print("original modules (tests/reference_nn.py) not found: no 'original' column")
        else:
            original.load_state_dict(ours.state_dict())
            entries.append(Entry("original", original, [original.stem, *original.stages]))
    return entries


def timm_entries() -> tuple[list[Entry], str | None]:
    try:
        import timm
        from timm.models.maxxvit import MaxxVit, model_cfgs
    except (ImportError, RuntimeError, AttributeError) as exc:  # absent, or failing on this torch
        return [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    cfg = model_cfgs["coatnet_0"]
    cfg = replace(cfg, conv_cfg=replace(cfg.conv_cfg, stride_mode="1x1"))
    equal = MaxxVit(cfg, num_classes=1000)
    dw = timm.create_model("coatnet_0_224", num_classes=1000)
    return [
        Entry("timm 1x1", equal, [equal.stem, *equal.stages]),
        Entry("timm dw", dw, [dw.stem, *dw.stages]),
    ], None


def make_step(model: nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    model.train(train)
    if not train:
        def infer() -> None:
            with torch.inference_mode():
                model(x)
        return infer
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(x).float().mean().backward()
        optimizer.step()
    return step


def interleaved(
    steps: dict[str, Callable[[], None]], rounds: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each step, one value per round; the order rotates every round."""
    for step in steps.values():
        step()  # warm-up (allocator, oneDNN primitive caches)
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(repeats):
                steps[name]()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def ratio_text(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:6.2f}x" if theirs else "   n/a"


def whole_model(entries: list[Entry], size: int, args: argparse.Namespace, timm_missing: str | None) -> None:
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=fmt)
    for e in entries:
        e.model.to(memory_format=fmt)
    print(f"\n== whole model, {size} px: images/s, median of {args.rounds} interleaved rounds "
          f"of {args.steps} steps (spread = (max - min) / median)")
    header = f"{'mode':<7}{'model':<12}{'img/s':>9}{'spread':>9}"
    others = [e.name for e in entries if e.name != "coatsearch"]
    header += "".join(f"{'vs ' + n:>14}" for n in others)
    print(header)
    for train in (False, True):
        mode = "train" if train else "infer"
        if mode not in args.modes.split(","):
            continue
        steps = {e.name: make_step(e.model, x, train) for e in entries}
        times = interleaved(steps, args.rounds, args.steps)
        speeds = {n: [args.batch / t for t in ts] for n, ts in times.items()}
        medians = {n: statistics.median(v) for n, v in speeds.items()}
        for e in entries:
            line = f"{mode:<7}{e.name:<12}{medians[e.name]:9.2f}{spread(speeds[e.name]):9.1%}"
            if e.name == "coatsearch":
                line += "".join(f"{ratio_text(medians[e.name], medians[n]):>14}" for n in others)
            print(line)
        if timm_missing is not None:
            print(f"{mode:<7}{'timm':<12}{'not installed':>18}  ({timm_missing})")
        for e in entries:
            e.model.zero_grad(set_to_none=True)


def per_stage(entries: list[Entry], size: int, args: argparse.Namespace, train: bool) -> None:
    """Milliseconds per batch of each stage alone, from the features the model itself makes.

    Training: forward and backward of the stage (input detached, a fixed output gradient),
    BatchNorm in training mode, no optimiser step.
    """
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=fmt)
    inputs: dict[str, list[torch.Tensor]] = {}
    for e in entries:
        e.model.train(train)
        with torch.no_grad():
            feats = [x]
            for stage in e.stages:
                feats.append(stage(feats[-1]))
        inputs[e.name] = feats
    n_stages = len(entries[0].stages)
    names = ["stem"] + [f"S{i}" for i in range(1, n_stages)]
    mode = "training (forward + backward)" if train else "inference"
    print(f"\n== per stage, {mode}, {size} px: ms per batch of {args.batch}, "
          f"median of {args.rounds} interleaved rounds ± spread")
    print(f"{'stage':<7}" + "".join(f"{e.name:>14}" for e in entries)
          + "".join(f"{'ours/' + e.name:>16}" for e in entries[1:]))
    totals = dict.fromkeys((e.name for e in entries), 0.0)
    for i, label in enumerate(names):
        steps = {}
        for e in entries:
            inp, out = inputs[e.name][i], inputs[e.name][i + 1]
            grad = torch.randn_like(out)

            def run(stage=e.stages[i], inp=inp, grad=grad) -> None:
                if train:
                    stage(inp).backward(grad)
                else:
                    with torch.inference_mode():
                        stage(inp)
            steps[e.name] = run
        times = interleaved(steps, args.rounds, 1)
        ms = {n: 1000 * statistics.median(t) for n, t in times.items()}
        for n, value in ms.items():
            totals[n] += value
        line = f"{label:<7}" + "".join(f"{ms[e.name]:9.0f} ±{spread(times[e.name]):3.0%}" for e in entries)
        line += "".join(f"{ms['coatsearch'] / ms[e.name]:16.2f}" for e in entries[1:])
        print(line)
    print(f"{'sum':<7}" + "".join(f"{totals[e.name]:14.0f}" for e in entries)
          + "".join(f"{totals['coatsearch'] / totals[e.name]:16.2f}" for e in entries[1:]))
    for e in entries:
        e.model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps timed per model per round")
    parser.add_argument("--nchw", action="store_true", help="contiguous NCHW instead of channels_last")
    parser.add_argument("--original", action="store_true", help="also time the pre-optimisation modules")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage table")
    parser.add_argument("--no-small", action="store_true", help="skip the small 32x32 network")
    parser.add_argument("--no-224", action="store_true", help="skip CoAtNet-0 at 224")
    parser.add_argument("--modes", default="infer,train", help="whole-model modes to time")
    parser.add_argument("--only-stages", action="store_true", help="per-stage tables only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    try:
        import timm
        timm_version = timm.__version__
    except (ImportError, RuntimeError, AttributeError):
        timm_version = "not installed"
    print(f"torch {torch.__version__}, timm {timm_version}, threads={args.threads} "
          f"batch={args.batch} fp32 {'NCHW' if args.nchw else 'channels_last'}")

    if not args.no_224:
        entries = coatsearch_entries(preset("coatnet-0"), args.original)
        theirs, missing = timm_entries()
        entries += theirs
        if not args.only_stages:
            whole_model(entries, 224, args, missing)
        if not args.no_stages:
            per_stage(entries, 224, args, train=False)
            per_stage(entries, 224, args, train=True)
        del entries, theirs
    if not args.no_small:
        spec = small_spec()
        entries = coatsearch_entries(spec, True)
        saved = args.batch, args.steps
        args.batch, args.steps = 64, 5
        whole_model(entries, spec.image_size, args, None if len(entries) > 1 else "n/a")
        args.batch, args.steps = saved


if __name__ == "__main__":
    main()
