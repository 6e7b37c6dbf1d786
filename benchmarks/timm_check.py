"""coatsearch's networks as timm builds them: the same parameters and the same function.

For each preset that timm's CoAtNet config can express once it takes timm's conventions
(`coatsearch.export.timm.with_timm_conventions`): write the module `coatsearch export --to
timm` writes, import it, build the network with `timm.create_model`, and compare the
parameter count with coatsearch's; then copy coatsearch's weights into it
(`state_to_timm`) and compare the logits on a random batch, and map timm's weights back
(`state_from_timm`, what `train --init-from` does) and compare again; where timm has its
own model of the size (``coatnet_0_224``...), load its weights into the preset the same
way and compare. One JSON line per preset. The others are listed with the one-line refusal `--to timm` prints.

timm 1.0.31 imports beside torch 2.14.1 and torchvision 0.29.1 (not beside the project's
torch 2.13), so run it in an environment of its own:

    python3 -m venv /work/timmenv
    /work/timmenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm pydantic pyyaml
    PYTHONPATH=. /work/timmenv/bin/python benchmarks/timm_check.py --image-size 64

Parameter counts are taken at 224 px on the meta device (no memory); logits at
``--image-size`` for the presets up to ``--max-params`` (the rest would need several GB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timm  # noqa: E402

from coatsearch.export import ExportError  # noqa: E402
from coatsearch.export.timm import state_from_timm, state_to_timm, timm_name, with_timm_conventions, write_timm_module  # noqa: E402
from coatsearch.nn import build  # noqa: E402
from coatsearch.presets import PRESETS, preset  # noqa: E402


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _import(path: Path) -> None:
    """Import the module at ``path`` as `import` would (timm's registry reads sys.modules)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)


def check(name: str, image_size: int, max_params: float, folder: Path) -> dict[str, object]:
    spec = with_timm_conventions(preset(name))
    try:
        path = write_timm_module(spec, folder / f"{name.replace('-', '_')}_timm.py")
    except ExportError as exc:
        return {"preset": name, "refused": str(exc)}
    _import(path)
    registry = timm_name(spec, path)
    ours_meta = build(spec, device="meta")
    with torch.device("meta"):
        theirs_meta = timm.create_model(registry)
    out: dict[str, object] = {"preset": name, "timm_model": registry, "params_coatsearch": _params(ours_meta),
                              "params_timm": _params(theirs_meta)}
    if _params(ours_meta) > max_params:
        return out
    small = spec.replace(image_size=image_size)
    torch.manual_seed(0)
    ours = build(small).eval()
    theirs = timm.create_model(registry, img_size=image_size).eval()
    theirs.load_state_dict(state_to_timm(ours.state_dict(), small))
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = ours(x), theirs(x)
    out["image_size"] = image_size
    out["params_coatsearch_at_size"] = _params(ours)  # the bias tables shrink with the grid
    out["max_logit_diff"] = float((a - b).abs().max())
    out["logit_scale"] = float(a.abs().max())
    # timm's weights back into coatsearch's network (what `train --init-from` reads)
    torch.manual_seed(1)
    fresh = timm.create_model(registry, img_size=image_size).eval()
    again = build(small).eval()
    again.load_state_dict(state_from_timm(fresh.state_dict(), small, "timm"))
    with torch.inference_mode():
        out["max_logit_diff_from_timm"] = float((again(x) - fresh(x)).abs().max())
    own = f"{name.replace('-', '_')}_224"  # timm's own CoAtNet of the same size, when it has one
    if own in timm.list_models():
        torch.manual_seed(2)
        theirs = timm.create_model(own, img_size=image_size).eval()
        mine = build(small).eval()
        mine.load_state_dict(state_from_timm(theirs.state_dict(), small, own))
        with torch.inference_mode():
            out["timm_own"], out["params_timm_own_at_size"] = own, _params(theirs)
            out["max_logit_diff_timm_own"] = float((mine(x) - theirs(x)).abs().max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-params", type=float, default=200e6)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps({"torch": torch.__version__, "timm": timm.__version__}))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.presets:
            print(json.dumps(check(name, args.image_size, args.max_params, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
