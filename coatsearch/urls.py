"""Database URLs without their passwords: for messages, and for what a run folder keeps.

A storage URL may carry a password (``postgresql://user:secret@host/db``). A run never
writes it: the run's ``space.yaml`` keeps the URL without it, and messages show ``***``.
The password then comes from where database clients look for it without a URL: for
PostgreSQL, the ``PGPASSWORD`` environment variable or ``~/.pgpass`` (libpq reads both).

The password is found by the text of the URL, not by a parser's reading of it: everything
between ``://`` and the last ``@`` is the user part, so a password holding an ``@`` or a
``/`` is masked whole even where a parser would take part of it for the host.
"""

from __future__ import annotations


def _split(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user part, @rest)``, or None when the URL has no user part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    at = rest.rfind("@")
    if at < 0:
        return None
    return scheme + sep, rest[:at], rest[at:]


def masked(url: str) -> str:
    """``url`` with its password shown as ``***``, for messages."""
    parts = _split(url)
    if parts is None:
        return url
    head, user, rest = parts
    name, colon, _ = user.partition(":")
    return f"{head}{name}{':***' if colon else ''}{rest}"


def without_password(url: str) -> str:
    """``url`` with no password at all, for files (the user name stays)."""
    parts = _split(url)
    if parts is None:
        return url
    head, user, rest = parts
    return f"{head}{user.partition(':')[0]}{rest}"


def has_password(url: str) -> bool:
    parts = _split(url)
    return parts is not None and ":" in parts[1]


def password_problem(url: str) -> str | None:
    """Why a database driver would misread the password, or None: an ``@`` in it must be
    percent-encoded (``%40``), or the text after it is taken for the host."""
    parts = _split(url)
    if parts is None or "@" not in parts[1].partition(":")[2]:
        return None
    return "the password holds '@': write it as %40, or leave it out of the URL and set PGPASSWORD"


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's password, as written and
    percent-decoded, replaced by ``***``."""
    from urllib.parse import unquote

    parts = _split(url)
    if parts is None:
        return text
    password = parts[1].partition(":")[2]
    for secret in {password, unquote(password)}:
        if secret:
            text = text.replace(secret, "***")
    return text
