"""A spec in timm's terms: its CoAtNet/MaxxViT config, its weights under timm's names, and
a module that registers the network in timm's model registry.

timm's `MaxxVitCfg` holds one convolution config and one Transformer config for the whole
network, so a spec has a timm form only when its stages agree on them. The conventions
where timm's CoAtNets differ from this project's defaults, each a spec field:

- ``stages[i].pool: avg``: timm average-pools the shortcut (and a Transformer block's
  attention input) of a downsampling block; the paper and the default here max-pool.
- ``stages[i].se_base: out``: timm's SE bottleneck is ``se_ratio`` x the block's output
  width; here (EfficientNet's convention) its input width.
- ``layer_norm_eps: 1e-6``: timm's LayerNorms; torch's default 1e-5 here.
- ``stem.bias: false``: timm's stem convolutions have no bias; the second one has here.
- ``stages[i].stride_mode: dw`` is timm's ``coatnet_*_224`` default (``1x1`` works too).

`with_timm_conventions` sets all of them. `timm_config` refuses, naming the first field,
a spec timm cannot express. Weights map both ways (`state_to_timm`, `state_from_timm`):
timm's 1x1 convolutions are the Linear layers here, its qkv channels are ordered per head,
its relative-bias table is ``((2H-1)(2W-1), heads)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from coatsearch.checkpoint import CheckpointError
from coatsearch.export.errors import ExportError
from coatsearch.spec import NetSpec, ffn_hidden, mbconv_hidden


def with_timm_conventions(spec: NetSpec) -> NetSpec:
    """``spec`` with timm's conventions (see the module docstring): average pooling, SE
    width from the output, LayerNorm eps 1e-6, no stem bias, stride on the depthwise conv."""
    data = spec.to_dict()
    data["layer_norm_eps"] = 1e-6
    data["stem"]["bias"] = False
    for stage in data["stages"]:
        stage["pool"] = "avg"
        if stage["kind"] == "C":
            stage.update(se_base="out", stride_mode="dw")
    return NetSpec.from_dict(data)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """timm's rounding of an MBConv's hidden width (`timm.layers.make_divisible`)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _refuse(field: str, why: str) -> ExportError:
    return ExportError(f"timm: {field}: {why}")


def timm_config(spec: NetSpec) -> dict[str, Any]:
    """The `MaxxVitCfg` fields (``conv_cfg``/``transformer_cfg`` as dicts) and the model's
    keyword arguments (``model``) that build ``spec`` in timm; `ExportError` naming the
    first field timm cannot express."""
    stem = spec.stem
    if stem.kind != "conv":
        raise _refuse("stem.kind", "timm's CoAtNet stem is two 3x3 convolutions (kind conv), not a patch embedding")
    if stem.stride != 2:
        raise _refuse("stem.stride", f"timm's stem has stride 2, this one {stem.stride}")
    if stem.bias:
        raise _refuse("stem.bias", "timm's stem convolutions have no bias (set stem.bias: false)")
    if spec.head_hidden is None:
        raise _refuse("head_hidden", "without a pre-logits layer timm normalises before pooling, "
                                     "this network after (set head_hidden, e.g. to the last width)")
    conv = [(i, s) for i, s in enumerate(spec.stages) if s.kind == "C"]
    attn = [(i, s) for i, s in enumerate(spec.stages) if s.kind == "T"]
    for i, stage in enumerate(spec.stages):
        where = f"stages[{i}]"
        if stage.stride != 2:
            raise _refuse(f"{where}.stride", "every timm stage downsamples by 2 (a stride-1 stage, such as a "
                                             "mixed stage's second part, has no timm form)")
        if stage.kind == "C":
            if mbconv_hidden(stage.channels, stage.expansion) != _make_divisible(stage.channels * stage.expansion):
                raise _refuse(f"{where}.expansion", f"timm rounds the hidden width to a multiple of 8: "
                                                    f"{stage.channels} x {stage.expansion:g} does not land on one")
            if stage.se_ratio > 0 and stage.se_base != "out":
                raise _refuse(f"{where}.se_base", "timm sizes the SE bottleneck from the block's output width "
                                                  "(set se_base: out)")
        else:
            if stage.attention != "relative":
                raise _refuse(f"{where}.attention", "timm's CoAtNet attention has a relative bias (plain has no timm form)")
            if ffn_hidden(stage.channels, stage.expansion) != int(stage.channels * stage.expansion):
                raise _refuse(f"{where}.expansion", "the FFN width is not a whole number")
    for group, what in ((conv, ("expansion", "se_ratio", "se_base", "norm", "stride_mode", "pool")),
                        (attn, ("expansion", "head_dim", "pool"))):
        for i, stage in group[1:]:
            for name in what:
                if getattr(stage, name) != getattr(group[0][1], name):
                    raise _refuse(f"stages[{i}].{name}", f"timm has one value for every {stage.kind} stage: "
                                                         f"{getattr(group[0][1], name)!r} in stages[{group[0][0]}]")
    if conv and conv[0][1].norm != stem.norm:
        raise _refuse("stem.norm", "timm's stem norm is its MBConv norm")
    if not conv and stem.norm != "batch":
        raise _refuse("stem.norm", "timm's default stem norm is batch")
    first_c = conv[0][1] if conv else None
    first_t = attn[0][1] if attn else None
    conv_cfg: dict[str, Any] = {"stride_mode": "1x1", "pool_type": "avg2", "downsample_pool_type": "avg2"}
    if first_c is not None:
        pool = "avg2" if first_c.pool == "avg" else "max2"
        conv_cfg = {
            "expand_ratio": first_c.expansion, "stride_mode": first_c.stride_mode, "pool_type": pool,
            "downsample_pool_type": pool, "attn_ratio": first_c.se_ratio, "attn_layer": "se" if first_c.se_ratio else "",
            "norm_layer": "batchnorm2d" if first_c.norm == "batch" else "layernorm2d",
            "norm_eps": 1e-5 if first_c.norm == "batch" else spec.layer_norm_eps,
        }
    transformer_cfg: dict[str, Any] = {"norm_eps": spec.layer_norm_eps}
    if first_t is not None:
        transformer_cfg.update(dim_head=first_t.head_dim, expand_ratio=first_t.expansion,
                               pool_type="avg2" if first_t.pool == "avg" else "max2")
    return {
        "embed_dim": tuple(s.channels for s in spec.stages), "depths": tuple(s.blocks for s in spec.stages),
        "block_type": tuple(s.kind for s in spec.stages), "stem_width": stem.channels, "stem_bias": False,
        "head_hidden_size": spec.head_hidden, "conv_cfg": conv_cfg, "transformer_cfg": transformer_cfg,
        "model": {"img_size": spec.image_size, "in_chans": spec.in_channels, "num_classes": spec.num_classes,
                  "drop_rate": spec.dropout, "drop_path_rate": spec.drop_path},
    }


# --------------------------------------------------------------------------- weights
_HEAD = {"head_norm.": "head.norm.", "pre_logits.0.": "head.pre_logits.fc.", "classifier.": "head.fc."}
_MBCONV = {"shortcut.proj.": "shortcut.expand.", "pre_norm.": "pre_norm.", "expand.": "conv1_1x1.",
           "expand_norm.": "norm1.", "depthwise.": "conv2_kxk.", "depthwise_norm.": "norm2.",
           "se.reduce.": "se.fc1.", "se.expand.": "se.fc2.", "proj.": "conv3_1x1."}
_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.(.*)")


def _timm_name(key: str, spec: NetSpec) -> str:
    """The timm name of one of this network's tensors."""
    for ours, theirs in _HEAD.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    if key.startswith("stem."):
        return key
    match = _BLOCK.fullmatch(key)
    if match is None:
        raise CheckpointError(f"timm: no timm name for {key!r}")
    i, j, rest = int(match.group(1)), match.group(2), match.group(3)
    prefix = f"stages.{i}.blocks.{j}."
    if spec.stages[i].kind == "C":
        for ours, theirs in _MBCONV.items():
            if rest.startswith(ours):
                return prefix + theirs + rest[len(ours):]
        raise CheckpointError(f"timm: no timm name for {key!r}")
    stride = spec.stages[i].stride if j == "0" else 1
    table = {"shortcut.proj.": "shortcut.expand.", "attn_norm.": "norm1.norm." if stride == 2 else "norm1.",
             "attn.qkv.": "attn.qkv.", "attn.proj.": "attn.proj.",
             "attn.rel_bias.table": "attn.rel_pos.relative_position_bias_table",
             "ffn_norm.": "norm2.", "ffn.0.": "mlp.fc1.", "ffn.2.": "mlp.fc2."}
    for ours, theirs in table.items():
        if rest.startswith(ours):
            return prefix + theirs + rest[len(ours):]
    raise CheckpointError(f"timm: no timm name for {key!r}")


def _heads(key: str, spec: NetSpec) -> tuple[int, int]:
    stage = spec.stages[int(key.split(".")[1])]
    return stage.heads, stage.head_dim


def _to_timm(key: str, tensor: torch.Tensor, spec: NetSpec) -> torch.Tensor:
    if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
        heads, dim = _heads(key, spec)
        # (3, heads, d) here -> (heads, 3, d) in timm (its qkv channels are ordered per head)
        tensor = tensor.reshape(3, heads, dim, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
    if key.endswith("rel_bias.table"):
        return tensor.flatten(1).t().contiguous()
    if tensor.ndim == 2 and ("attn." in key or "ffn." in key):
        return tensor[:, :, None, None].contiguous()  # timm's 1x1 convolutions
    return tensor


def state_to_timm(state: Mapping[str, torch.Tensor], spec: NetSpec) -> dict[str, torch.Tensor]:
    """This network's state dict under timm's names and shapes (`timm_config` first)."""
    timm_config(spec)
    return {_timm_name(k, spec): _to_timm(k, v, spec) for k, v in state.items()}


def state_from_timm(state: Mapping[str, torch.Tensor], spec: NetSpec, source: str = "timm weights") -> dict[str, torch.Tensor]:
    """A timm CoAtNet state dict as ``spec``'s network names it; `CheckpointError` naming
    the first field timm's network cannot match, or the first key or shape missing."""
    try:
        timm_config(spec)
    except ExportError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    from coatsearch.nn import build

    target = build(spec, device="meta").state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, want in target.items():
        name = _timm_name(key, spec)
        if name not in state:
            raise CheckpointError(f"{source}: missing key {name!r} (for {key})")
        tensor = state[name]
        if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
            heads, dim = _heads(key, spec)
            flat = tensor.reshape(tensor.shape[0], -1) if tensor.ndim == 4 else tensor
            tensor = flat.reshape(heads, 3, dim, *flat.shape[1:]).transpose(0, 1).reshape(flat.shape)
        elif key.endswith("rel_bias.table"):
            if tensor.ndim != 2 or tensor.shape[0] != want.shape[1] * want.shape[2]:
                raise CheckpointError(f"{source}: {name}: shape {tuple(tensor.shape)} does not match "
                                      f"the network's grid {tuple(want.shape[1:])}")
            tensor = tensor.t().reshape(want.shape)
        elif tensor.ndim == 4 and want.ndim == 2:
            tensor = tensor.flatten(1)
        if tuple(tensor.shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: {name}: shape {tuple(state[name].shape)} does not match the network's "
                                  f"{tuple(want.shape)} (for {key})")
        out[key] = tensor.contiguous()
    return out


# --------------------------------------------------------------------------- the module
def timm_name(spec: NetSpec, path: str | Path) -> str:
    """The registry name: ``coatsearch_`` and the spec's name (or the file's), as an identifier."""
    base = spec.name or Path(path).stem.removesuffix("_timm")
    return "coatsearch_" + re.sub(r"\W", "_", base).strip("_").lower()


def module_text(spec: NetSpec, name: str, weights: str | None = None) -> str:
    """Python source that registers ``spec`` as timm model ``name``."""
    cfg = timm_config(spec)
    model = cfg.pop("model")
    conv, transformer = cfg.pop("conv_cfg"), cfg.pop("transformer_cfg")
    fields = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
    load = ""
    if weights is not None:
        load = (f"    if pretrained:\n        weights = Path(__file__).with_name({weights!r})\n"
                "        model.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True))\n")
    return f'''"""{spec.name or name} as a timm model (written by `coatsearch export --to timm`).

`import` this module, then `timm.create_model({name!r})`{" (pretrained=True loads the weights beside it)" if weights else ""}.
The network is coatsearch's spec in timm's MaxxVit: {spec.layout}, {spec.image_size} px.
"""

{"from pathlib import Path" + chr(10) + chr(10) if weights else ""}import torch
from timm.models import register_model
from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg

CFG = MaxxVitCfg(
    {fields},
    conv_cfg=MaxxVitConvCfg(**{conv!r}),
    transformer_cfg=MaxxVitTransformerCfg(**{transformer!r}),
)
DEFAULTS = {model!r}


@register_model
def {name}(pretrained: bool = False, **kwargs):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = MaxxVit(CFG, **{{**DEFAULTS, **kwargs}})
{load}    return model
'''


def write_timm_module(spec: NetSpec, path: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write the module registering ``spec`` in timm (and, with ``state``, its weights in
    timm's names beside it, ``<module>.pth``); `ExportError` naming the first field timm
    cannot express."""
    path = Path(path)
    name = timm_name(spec, path)
    weights = None
    if state is not None:
        weights = path.with_suffix(".pth")
        torch.save(state_to_timm(state, spec), weights)
    path.write_text(module_text(spec, name, weights.name if weights else None))
    return path
