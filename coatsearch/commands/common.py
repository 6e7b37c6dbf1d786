"""What every command shares: the typer app, the two consoles, and the rule that the
library's input errors (bad spec, bad space, bad data) end a command with one line on
stderr and exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from coatsearch.errors import CoatsearchError, cut, os_reason
from coatsearch.host import sleep_while_waiting

# Before any command imports torch: OpenMP threads that sleep while waiting keep a run
# near its fair share of a machine it shares (see `sleep_while_waiting`).
sleep_while_waiting()

app = typer.Typer(
    help="Search and scale CoAtNet-family vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: when output goes to a file or pipe, do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr, in one line; the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(cut(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def write_output(path: Path, text: str, flag: str = "-o") -> None:
    """Write a command's output file, or say in one line why it cannot be written."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise CoatsearchError(f"{flag} {path}: cannot write ({os_reason(exc)})") from None


def user_errors_exit_2(func: F) -> F:
    """Report the library's input errors (`CoatsearchError`) as ``error: ...``, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CoatsearchError as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]
