"""The one error type of the data layer."""

from __future__ import annotations

from coatsearch.errors import CoatsearchError


class DataError(CoatsearchError):
    """Unusable data. The message is one line and names the source or file at fault."""
