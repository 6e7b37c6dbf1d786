"""Checks of an Optuna storage URL, made when a space is compiled: that it parses, has
its driver, keeps the study (no in-memory database), names a usable SQLite file, and that
a database server answers; and the URL as messages show it (no password).
"""

from __future__ import annotations

from pathlib import Path

from coatsearch.errors import first_line
from coatsearch.space import SpaceError
from coatsearch.urls import masked, password_problem, scrub


def check_storage_url(url: str, field_name: str = "storage") -> None:
    """A storage URL that SQLAlchemy can parse, with an installed driver, that keeps the
    study (not an in-memory database) and, for SQLite, names a file in an existing folder
    that is a SQLite database or not there yet. Touches no database (see `check_storage_server`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    problem = password_problem(url)
    if problem:
        raise SpaceError(f"{field_name}: {problem}")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SpaceError(
            f"{field_name}: {masked(url)!r} is not a database URL (expected e.g. sqlite:///study.db or postgresql://host/db)"
        ) from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise SpaceError(f"{field_name}: unknown database scheme {parsed.drivername!r} (expected sqlite or postgresql)") from None
    except ImportError as exc:
        hint = " (pip install 'psycopg[binary]')" if parsed.get_driver_name() == "psycopg" else ""
        raise SpaceError(f"{field_name}: the driver for {parsed.drivername} is not installed{hint}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory":
        raise SpaceError(f"{field_name}: {url} is an in-memory database, which keeps nothing after the run; "
                         "expected a file, e.g. sqlite:///study.db")
    path = Path(database).expanduser()
    if not path.resolve().parent.is_dir():
        raise SpaceError(f"{field_name}: the folder of {database} does not exist")
    if path.is_dir():
        raise SpaceError(f"{field_name}: {database} is a directory, expected a SQLite database file")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise SpaceError(f"{field_name}: {database} is not a SQLite database; move it away or name another file")


#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_storage_server(url: str, field_name: str = "storage") -> None:
    """A database server answers at ``url`` (SQLite files are checked by `check_storage_url`
    and created when the study opens)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    engine = create_engine(parsed, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise SpaceError(f"{field_name}: cannot reach the database at {safe_url(url)}: {scrub(first_line(exc), url)}") from None
    finally:
        engine.dispose()


def safe_url(url: str) -> str:
    """A URL with its password masked, for messages (`coatsearch.urls.masked`)."""
    return masked(url)
