"""ONNX export checked against PyTorch: every preset at a small resolution and random specs
of every block kind, one JSON line each.

For each network: build it (seed-0 weights), export it with `coatsearch.export.to_onnx`
(torch's dynamo exporter, dynamic batch), run the file with onnxruntime's CPU provider on
random batches of 1 and 3 images and report the largest |logit difference| from PyTorch,
with the export's wall time. The acceptance bound is 1e-4.

    python benchmarks/export_check.py --image-size 64
    python benchmarks/export_check.py --presets coatnet-0 vit-rel --random 0

``--max-params`` skips presets above it (CoAtNet-6/7 hold 5-10 GB of float32 weights; an
ONNX file over 2 GB keeps its weights in a side file), naming them in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coatsearch.export.onnx import onnx_difference, to_onnx  # noqa: E402
from coatsearch.flops import count_analytic  # noqa: E402
from coatsearch.nn import build  # noqa: E402
from coatsearch.presets import PRESETS, preset  # noqa: E402
from tests.test_export import random_spec  # noqa: E402


def check(label: str, spec, folder: Path, max_params: float) -> dict[str, object]:
    params = count_analytic(spec).params
    out: dict[str, object] = {"network": label, "image_size": spec.image_size, "params": params}
    if params > max_params:
        out["skipped"] = f"over --max-params {max_params:.3g}"
        return out
    torch.manual_seed(0)
    model = build(spec).eval()
    start = time.perf_counter()
    path = to_onnx(model, spec, folder / f"{label}.onnx")
    out["export_s"] = round(time.perf_counter() - start, 1)
    out["max_abs_logit_diff_batch_1_and_3"] = onnx_difference(path, model, spec, (1, 3))
    for extra in folder.iterdir():
        extra.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--random", type=int, nargs="*", default=[0, 3, 5, 7], help="seeds of random specs")
    parser.add_argument("--max-params", type=float, default=800e6)
    args = parser.parse_args()
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.presets:
            spec = preset(name).replace(image_size=args.image_size)
            print(json.dumps(check(name, spec, Path(folder), args.max_params)), flush=True)
        for seed in args.random:
            spec = random_spec(seed)
            kinds = "/".join(f"{s.kind}{'' if s.kind == 'C' else ':' + s.attention}" for s in spec.stages)
            print(json.dumps({**check(f"random-{seed}", spec, Path(folder), args.max_params),
                              "stem": spec.stem.kind, "stages": kinds}), flush=True)


if __name__ == "__main__":
    main()
