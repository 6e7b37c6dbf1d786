"""Generated sections of a Markdown file: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` is rewritten from data, so no number in a README is typed by hand and
whatever a person wrote around the markers stays as written."""

from __future__ import annotations

import re


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of the section called ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, start: str, end: str, body: str) -> str | None:
    """``text`` with what lies between ``start`` and ``end`` replaced by ``body`` (the markers
    kept), or None where the markers are missing: callers decide whether that is an error,
    a section to append, or a file to leave alone."""
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def with_section(text: str, start: str, end: str, body: str, heading: str) -> str:
    """`replace_section`, appending the section under ``heading`` where the markers are missing."""
    replaced = replace_section(text, start, end, body)
    if replaced is not None:
        return replaced
    return f"{text.rstrip()}\n\n{heading}\n\n{start}\n{body}\n{end}\n"
