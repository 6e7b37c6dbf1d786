"""The GPU paths, checked by one script on a machine with one GPU and no network.

    python benchmarks/gpu_check.py [--wheels DIR] [--budget-s 480]

In order, each part timed and recorded, one JSON line printed at the end:

1. ``trial``: one trial trained with `fit` on CUDA, bfloat16 autocast and channels_last
   (the trainer's defaults there): status, validation accuracy, images/s.
2. ``speed``: CoAtNet-0 at 224 px, training and inference images/s in interleaved rounds
   under the same autocast and memory format, beside timm's equal-FLOP ``coatnet_0``
   (stride on the first 1x1 convolution, as here) in the same process when timm imports.
3. ``search``: a 4-trial optuna search, two trials at a time sharing the GPU.
4. ``onnx``: the exported network run by onnxruntime, on its CUDA provider when it has one,
   with the largest |logit difference| from PyTorch.

Missing Python packages (the search stack: optuna, pydantic, fvcore...) are installed
first from wheels in ``--wheels`` (``pip install --no-index --find-links DIR``) when they do
not import. Gather them where there is a network, for the GPU machine's Python (3.12)::

    pip download -d benchmarks/gpu_wheels --python-version 3.12 --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
        optuna pydantic iopath plotly simplejpeg tabulate termcolor pillow
    pip wheel --no-deps -w benchmarks/gpu_wheels fvcore==0.1.5.post20221221 yacs

(35 MB measured on 2026-12-06, numpy included; the folder is not committed).
Without a GPU every part still runs on the CPU (the speed part at 64 px, batch 4) and the
line says ``"device": "cpu"``: that checks the script and the CPU paths, not the GPU's.
Parts are skipped, saying why, once ``--budget-s`` is spent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NEEDED = {"optuna": "optuna", "pydantic": "pydantic", "fvcore": "fvcore", "iopath": "iopath", "plotly": "plotly",
          "simplejpeg": "simplejpeg", "yaml": "pyyaml", "rich": "rich", "typer": "typer"}


def install_missing(wheels: Path | None) -> list[str]:
    """Install the packages that do not import from the wheel folder; what was installed."""
    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing and wheels is not None and wheels.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing],
                       check=True, capture_output=True)
    return missing


def part_trial(device: str) -> dict[str, Any]:
    from coatsearch import TrainConfig, fit, load_data, load_spec

    spec = load_spec(str(ROOT / "spaces/nets/small-cctt.yaml"))
    data = load_data("fashion-mnist", image_size=spec.image_size, train_size=2000, seed=0)
    config = TrainConfig(epochs=1, device=device, amp=True, channels_last=True, batch_size=128)
    result = fit(spec, config, data)
    final = result.final
    return {"status": str(result.status), "val_acc": final.val_acc if final else None,
            "images_per_s": final.images_per_s if final else None, "reason": result.reason}


def _timed(step: Any, rounds: int, repeats: int) -> list[float]:
    import torch

    step()
    times = []
    for _ in range(rounds):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / repeats)
    return times


def part_speed(device: str) -> dict[str, Any]:
    import torch

    from coatsearch import build, preset

    gpu = device == "cuda"
    size, batch = (224, 64) if gpu else (64, 4)
    models = {"coatsearch": build(preset("coatnet-0").replace(image_size=size))}
    note = None
    try:
        from dataclasses import replace

        from timm.models.maxxvit import MaxxVit, model_cfgs

        cfg = model_cfgs["coatnet_0"]
        models["timm"] = MaxxVit(replace(cfg, conv_cfg=replace(cfg.conv_cfg, stride_mode="1x1")), img_size=size)
    except Exception as exc:  # absent, or failing on this torch
        note = f"timm: {type(exc).__name__}"
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if gpu else torch.float32
    out: dict[str, Any] = {"image_size": size, "batch": batch, "note": note}
    steps: dict[str, Any] = {}
    for name, model in models.items():
        model = model.to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

        def train(model: Any = model, optimizer: Any = optimizer) -> None:
            model.train()
            with torch.autocast(device, dtype=dtype, enabled=gpu):
                loss = model(x).float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def infer(model: Any = model) -> None:
            model.eval()
            with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=gpu):
                model(x)

        steps[f"{name} train"], steps[f"{name} infer"] = train, infer
    rounds = 5 if gpu else 2
    for r in range(rounds):  # interleaved: every step once per round, the order rotating
        names = list(steps)[r % len(steps):] + list(steps)[: r % len(steps)]
        for name in names:
            out.setdefault(name, []).extend(batch / t for t in _timed(steps[name], 1, 5 if gpu else 1))
    for name in steps:
        values = out[name]
        median = statistics.median(values)
        out[name] = {"images_per_s_median": median, "spread": (max(values) - min(values)) / median}
    return out


def part_search(device: str, folder: Path) -> dict[str, Any]:
    import yaml

    from coatsearch import compile_space, run_study
    from coatsearch.results import read_table
    from coatsearch.space import load_space

    space = {
        "study": "gpu_check", "base": {"image_size": 32, "num_classes": 10, "stem": {"channels": 16, "stride": 1},
                                       "stages": [{"kind": "C", "blocks": 1, "channels": 16},
                                                  {"kind": "C", "blocks": 1, "channels": 32},
                                                  {"kind": "T", "blocks": 2, "channels": 64},
                                                  {"kind": "T", "blocks": 1, "channels": 128}]},
        "params": {"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1]}}, "split_total": 3,
        "objectives": ["val_acc", "flops"], "train": {"epochs": 1, "batch_size": 128, "device": device},
        "data": {"source": "fashion-mnist", "train_size": 1024, "val_fraction": 0.1}, "sampler": "grid", "trials": 4,
        "concurrency": 2, "resources": {"cpu": 1, "gpu": 0.5 if device == "cuda" else 0},
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    outcome = run_study(compile_space(load_space(path)), folder / "run")
    table = read_table(outcome.table_path)
    return {"trials": len(table), "statuses": table["status"].astype(str).value_counts().to_dict(),
            "val_acc_max": float(table["val_acc"].max())}


def part_onnx(folder: Path) -> dict[str, Any]:
    import onnxruntime

    from coatsearch.export import export

    done = export(str(ROOT / "spaces/nets/small-cctt.yaml"), "onnx", folder / "net.onnx", check=True)
    providers = onnxruntime.get_available_providers()
    out: dict[str, Any] = {"max_abs_logit_diff_cpu": done.max_difference, "providers": providers}
    if "CUDAExecutionProvider" in providers:
        import numpy as np
        import torch

        from coatsearch.export.files import load_network
        from coatsearch.export.onnx import example, onnx_logits

        spec, model, _ = load_network(str(ROOT / "spaces/nets/small-cctt.yaml"))
        images = example(spec, 3, seed=3)
        with torch.inference_mode():
            want = model(images).numpy()
        got = onnx_logits(done.path, images, ["CUDAExecutionProvider", "CPUExecutionProvider"])
        out["max_abs_logit_diff_cuda"] = float(np.abs(got - want).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / "benchmarks" / "gpu_wheels")
    parser.add_argument("--budget-s", type=float, default=480)
    args = parser.parse_args()
    started = time.perf_counter()
    record: dict[str, Any] = {"installed": install_missing(args.wheels)}
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    record.update(device=device, torch=torch.__version__,
                  gpu=torch.cuda.get_device_name(0) if device == "cuda" else None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parts = [("trial", lambda: part_trial(device)), ("speed", lambda: part_speed(device)),
                 ("search", lambda: part_search(device, folder)), ("onnx", lambda: part_onnx(folder))]
        for name, run in parts:
            if time.perf_counter() - started > args.budget_s:
                record[name] = {"skipped": f"the {args.budget_s:g} s budget is spent"}
                continue
            mark = time.perf_counter()
            try:
                record[name] = run()
            except Exception as exc:  # a failing part is recorded; the others still run
                record[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            record[name]["wall_s"] = round(time.perf_counter() - mark, 1)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(record, default=str))


if __name__ == "__main__":
    main()
