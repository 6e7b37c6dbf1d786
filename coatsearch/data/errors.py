"""The one error type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Unusable data. The message is one line and names the source or file at fault."""
