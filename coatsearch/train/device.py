"""Where and in what precision a trial runs: device choice, autocast, loss scaling.

The training loop asks this module for a `Runtime` and then treats every device alike;
the differences (XLA's step barrier, CUDA's mixed precision, what channels_last helps)
stay here.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

import torch

from coatsearch.train.config import TrainConfig, TrainConfigError


def _xla_device() -> torch.device:
    import torch_xla

    if hasattr(torch_xla, "device"):
        return torch_xla.device()
    import torch_xla.core.xla_model as xm  # older torch_xla

    return xm.xla_device()


def _xla_sync() -> None:
    import torch_xla

    if hasattr(torch_xla, "sync"):
        torch_xla.sync()
    else:
        import torch_xla.core.xla_model as xm

        xm.mark_step()


def _has_xla() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then XLA (when torch_xla is installed), then MPS, then the CPU.

    A device named explicitly but not present raises `TrainConfigError`.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _has_xla():
            return _xla_device()
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("device: cuda requested but torch.cuda.is_available() is False")
    if name == "mps" and not _mps_available():
        raise TrainConfigError("device: mps requested but torch.backends.mps.is_available() is False")
    if name == "xla":
        if not _has_xla():
            raise TrainConfigError("device: xla requested but torch_xla is not installed")
        return _xla_device()
    return torch.device(name)


@dataclass
class Runtime:
    """A resolved device with its precision and synchronisation policy."""

    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    channels_last: bool
    #: Called after every optimiser step (XLA's graph barrier; nothing elsewhere).
    step_barrier: Callable[[], None]
    #: Check for a non-finite loss every this many steps: every step on the CPU, where
    #: reading a value is free; less often on accelerators, where it forces a sync.
    check_every: int

    def autocast(self) -> ContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        precision = str(self.amp_dtype).removeprefix("torch.") + " autocast" if self.amp_dtype else "fp32"
        layout = ", channels_last" if self.channels_last else ""
        return f"device {self.device}, {precision}{layout}"


def make_runtime(config: TrainConfig) -> Runtime:
    device = resolve_device(config.device)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(
        "cuda" if device.type == "cuda" else "cpu", enabled=amp_dtype is torch.float16
    )
    return Runtime(
        device=device,
        amp_dtype=amp_dtype,
        scaler=scaler,
        channels_last=config.channels_last and device.type in ("cpu", "cuda"),
        step_barrier=_xla_sync if device.type == "xla" else (lambda: None),
        check_every=1 if device.type == "cpu" else 25,
    )
