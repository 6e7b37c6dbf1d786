"""What an export refuses, in one line."""

from __future__ import annotations

import importlib.util

from coatsearch.errors import CoatsearchError


class ExportError(CoatsearchError):
    """A network or file that cannot be exported as asked (one line, naming the field)."""


def needs(module: str, what: str, extra: str) -> None:
    """`ExportError` when ``module`` is not installed: ``what`` needs it."""
    if importlib.util.find_spec(module) is None:
        raise ExportError(f"{what} needs the {module} package: pip install 'coatsearch[{extra}]'")
