"""Where a run's trials are logged besides its run directory: the space's ``tracking:``.

``tracking: {mlflow: URI}`` logs each trial, as it ends, as one MLflow run
(`coatsearch.search.mlflow_log`). The URI is MLflow's: a SQLite file
(``sqlite:///runs/mlflow.db``), a ``file:`` URI or a plain path, or a tracking server's
address. A relative local path in it is taken from the space file's folder, like
``data.source`` and ``warm_start``, and kept absolute, so a resumed run logs to the same
place from anywhere. TensorBoard's event files need no setting: every run writes them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The optional install that MLflow logging needs.
MLFLOW_EXTRA = "pip install 'coatsearch[mlflow]'"

#: A URI's scheme (two letters at least, so a Windows drive is a path).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


class Tracking(BaseModel):
    """The space's ``tracking:`` settings: ``mlflow``, an MLflow tracking URI (none: no
    MLflow logging)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mlflow: str | None = Field(None, min_length=1, description="an MLflow tracking URI: sqlite:///PATH.db, a path or a "
                               "server's address; each trial is logged as one MLflow run")


def local_path(uri: str) -> str | None:
    """The local path a URI names (a plain path, ``file:`` or ``sqlite:///``), None for
    any other (a server's address)."""
    match = _SCHEME.match(uri)
    if match is None:
        return uri
    scheme, rest = match.group(1).lower(), uri[match.end():]
    if scheme == "sqlite" and rest.startswith("///"):
        return rest[3:]
    if scheme == "file":
        if rest.startswith("//"):  # file:///PATH, not file://HOST/PATH
            return "/" + rest[3:] if rest.startswith("///") else None
        return rest
    return None


def rooted_uri(uri: str, folder: Path) -> str:
    """``uri`` with a relative local path in it taken from ``folder`` (absolute, ``~``
    expanded); other URIs as written."""
    path = local_path(uri)
    if path is None or not path or path == ":memory:":
        return uri
    full = os.path.abspath(folder / os.path.expanduser(path))
    if path == uri:
        return full
    return f"sqlite:///{full}" if uri.lower().startswith("sqlite:") else Path(full).as_uri()


def rooted_tracking(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A space file's mapping with its ``tracking.mlflow`` path taken from ``folder`` (`rooted_uri`)."""
    tracking = data.get("tracking")
    if not isinstance(tracking, dict) or not isinstance(tracking.get("mlflow"), str):
        return data
    return {**data, "tracking": {**tracking, "mlflow": rooted_uri(tracking["mlflow"], folder)}}
