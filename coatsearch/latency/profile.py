"""A device's latency profile: what each unit took there, and the per-kind fits that
estimate units it never timed; written by `calibrate`, read by `predict`.

A profile holds for the device, thread count and torch version it was made with:
`check` refuses (or, asked to, warns about) one made under other conditions, in one line
naming the difference.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from coatsearch.errors import CoatsearchError


class LatencyError(CoatsearchError):
    """A profile that cannot be used here, or a bad calibration setting: one line."""


def device_name(device: str = "cpu") -> str:
    """The processor or GPU a time was measured on."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions(device: str = "cpu") -> dict[str, Any]:
    """What a latency depends on besides the network: the device, threads, torch."""
    return {"device": device_name(device), "device_kind": device.split(":")[0], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpus": os.cpu_count()}


@dataclass
class Profile:
    """``units``: key -> median milliseconds; ``fits``: kind -> coefficients of
    `coatsearch.latency.units.features`; ``scale`` and ``overhead_ms``: batch -> a whole
    network's time as ``scale x (sum of its units) + overhead``, fitted on the timed networks."""

    conditions: dict[str, Any]
    date: str
    units: dict[str, float] = field(default_factory=dict)
    fits: dict[str, list[float]] = field(default_factory=dict)
    overhead_ms: dict[str, float] = field(default_factory=dict)
    #: batch -> what the sum of a network's units is multiplied by (before the overhead)
    scale: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def check_batch(self, batch: int) -> None:
        """`LatencyError` when the profile timed whole networks but not at ``batch``: its
        scale and overhead correct the sum of units only at the batches they were fitted
        on, and a prediction at another batch would come out uncorrected without a word."""
        calibrated = sorted({*self.scale, *self.overhead_ms}, key=int)
        if calibrated and str(batch) not in calibrated:
            raise LatencyError(f"batch: the latency profile was calibrated at batch {', '.join(calibrated)}, "
                               f"not {batch}; calibrate with --batch {batch}")

    def save(self, path: Path) -> None:
        from coatsearch.files import write_atomic

        write_atomic(Path(path), json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Profile:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise LatencyError(f"{path}: not a latency profile ({type(exc).__name__}: {str(exc)[:100]})") from None

    def check(self, device: str | None = None, strict: bool = True,
              compared: tuple[str, ...] = ("device", "threads", "torch")) -> str | None:
        """None when this process matches the profile's ``compared`` conditions; else the
        difference in one line, raised as `LatencyError` when ``strict``, else warned about
        and returned. The default compares threads too, for code that times networks here
        beside the profile; a prediction alone runs nothing, so it compares device and torch."""
        here = conditions(device or self.conditions.get("device_kind", "cpu"))
        unknown = sorted(set(compared) - set(here))
        if unknown:  # a misspelt name would otherwise compare nothing or fail with a KeyError
            raise LatencyError(f"compared: {', '.join(unknown)} is not a condition (expected some of {', '.join(here)})")
        diffs = [f"{name} {self.conditions.get(name)!r} (here {here[name]!r})"
                 for name in compared if self.conditions.get(name) != here[name]]
        if not diffs:
            return None
        line = f"latency profile made under other conditions: {', '.join(diffs)}; calibrate again here"
        if strict:
            raise LatencyError(line)
        warnings.warn(line, stacklevel=2)
        return line


#: What a prediction depends on besides the profile: it runs nothing here, so this
#: process's thread count does not enter (the latency is the profile's own threads').
PREDICTION_CONDITIONS = ("device", "torch")


@functools.lru_cache(maxsize=4)
def load_checked(path: str) -> Profile:
    """A profile read once per process and checked against this machine's device and torch
    (`LatencyError` naming the difference): what a search's budget and latency objective
    use. Not its threads: a search predicts latency at the profile's own thread count (the
    deployment's, such as 1 thread at batch 1), whatever threads its trials train with."""
    if not path:
        raise LatencyError("latency_profile: not set; expected a profile from `coatsearch latency calibrate`")
    profile = Profile.load(Path(path))
    profile.check(compared=PREDICTION_CONDITIONS)
    return profile
