"""Checkpoint files: a trained network's weights with the spec they belong to and the
settings that trained them, readable by every command that takes weights.

A checkpoint is one ``torch.save`` file of plain data (loaded with ``weights_only=True``,
so opening one runs no code)::

    {"format": "coatsearch-checkpoint", "version": 1,
     "spec": {...},            # the network as trained (after adapting it to the data)
     "state_dict": {...},      # the model's weights
     "settings": {...},        # the training file that made it: spec, data, trainer
     "epoch": 3, "epochs": [{...metrics...}, ...], "best_epoch": 2,
     "trainer": {...}}         # last.pt only: optimiser, schedule and generators, to resume

`coatsearch convert`'s output (``{"spec", "state_dict"}``) and a bare state dict (with the
spec given separately) read as checkpoints too. `load_weights` puts a state dict into a
model or says, in one line, which key or shape does not match.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coatsearch.errors import CoatsearchError, first_line
from coatsearch.spec import NetSpec, SpecError

FORMAT = "coatsearch-checkpoint"
VERSION = 1


class CheckpointError(CoatsearchError):
    """A checkpoint that cannot be read or does not fit its network (one line)."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file (see the module docstring)."""

    spec: NetSpec
    state_dict: dict[str, torch.Tensor]
    settings: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    trainer: dict[str, Any] | None = None

    def to_file(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "spec": self.spec.to_dict(), "state_dict": self.state_dict,
            "settings": self.settings, "epoch": self.epoch, "epochs": self.epochs, "best_epoch": self.best_epoch,
        }
        if self.trainer is not None:
            out["trainer"] = self.trainer
        return out


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a file beside it, then a rename), so an
    interrupt never leaves half a checkpoint where a whole one was."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(checkpoint.to_file(), partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as exc:  # torch reports a missing folder as a RuntimeError
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write the checkpoint ({first_line(exc)})") from None
    return path


def read_checkpoint(path: str | Path, spec: NetSpec | None = None) -> Checkpoint:
    """A checkpoint file, `convert`'s ``{"spec", "state_dict"}`` or a bare state dict.

    ``spec`` names the network of a bare state dict (a file with a spec keeps its own).
    `CheckpointError` for a file that is missing, a folder, not a torch file, or holds
    neither form."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, AttributeError, IndexError, KeyError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first_line(exc)})") from None
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), Mapping):
        try:
            net = NetSpec.from_dict(saved["spec"], source=f"{path}: spec") if "spec" in saved else spec
            if net is None:
                raise CheckpointError(f"{path}: a state_dict without its spec needs --spec (the network it belongs to)")
        except SpecError as exc:
            raise CheckpointError(str(exc)) from None
        return Checkpoint(
            spec=net, state_dict=dict(saved["state_dict"]), settings=dict(saved.get("settings") or {}),
            epoch=int(saved.get("epoch") or 0), epochs=list(saved.get("epochs") or []),
            best_epoch=saved.get("best_epoch"), trainer=saved.get("trainer"),
        )
    if isinstance(saved, Mapping) and saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        if spec is None:
            raise CheckpointError(f"{path}: a bare state_dict needs --spec (the network it belongs to)")
        return Checkpoint(spec=spec, state_dict=dict(saved))
    raise CheckpointError(f"{path}: expected a checkpoint ({{'spec', 'state_dict', ...}}) or a state_dict")


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """`CheckpointError` naming the first key or shape of ``state`` that ``model`` does not
    have (keys in the model's order, then the state's)."""
    target = model.state_dict()
    for key, tensor in target.items():
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r} (the network has it, the weights do not)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: {key}: shape {tuple(state[key].shape)} does not match "
                                  f"the network's {tuple(tensor.shape)}")
    for key in state:
        if key not in target:
            raise CheckpointError(f"{source}: unexpected key {key!r} (the network has no such tensor)")


#: The classifier's tensors: a network started from other weights may predict other classes.
HEAD = ("classifier.weight", "classifier.bias")


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights",
                 fresh_head: bool = False) -> list[str]:
    """``model.load_state_dict(state)`` after `check_state` (one-line errors). With
    ``fresh_head``, a classifier of another number of classes is left as initialised
    (fine-tuning on other data); the notes say so."""
    notes: list[str] = []
    target = model.state_dict()
    if fresh_head and any(k in state and k in target and state[k].shape != target[k].shape for k in HEAD):
        weight = state.get(HEAD[0])
        classes = weight.shape[0] if weight is not None else "?"
        notes.append(f"{source}: the classifier predicts {classes} classes, the data has "
                     f"{target[HEAD[0]].shape[0]}: the classifier starts fresh")
        state = {**{k: v for k, v in state.items() if k not in HEAD}, **{k: target[k] for k in HEAD}}
    check_state(model, state, source)
    model.load_state_dict(state)
    return notes
