"""Whether the model is being traced or compiled, which turns every fast path off."""

from __future__ import annotations

import torch


def fast_path_allowed() -> bool:
    """False while fvcore (``torch.jit.trace``), torch.compile or torch.export traces the model.

    Tracing must see the plain operators (the counters name them); a compiled graph must not
    depend on Python-side caches. Both then take the reference path.
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return not torch.jit.is_tracing()
