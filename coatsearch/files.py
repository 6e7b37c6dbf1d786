"""Reading a user's files and writing a run's, with bounded work and no surprises.

Every file coatsearch reads on a user's say (a space, a spec, a trainer file, a run's
saved space) goes through `read_text`: it must be a regular file (a named pipe would block
for ever, ``/dev/zero`` would never end), of a bounded size, in UTF-8. YAML goes through
`load_yaml`: a key given twice is refused (PyYAML keeps the last one silently), and the
document's size with every alias expanded is bounded (a "billion laughs" of nested
aliases is a few lines that expand to billions of nodes). Every file a run writes goes
through `write_atomic`: a temporary file beside it, renamed over it, so a full disk or a
crash leaves the old file whole, and a symbolic link in its place is replaced, never
written through.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from coatsearch.errors import CoatsearchError, os_reason

#: The largest text file read as a space, spec or trainer file.
MAX_TEXT_BYTES = 4 * 1024 * 1024
#: The most YAML nodes a document may hold once every alias is expanded.
MAX_YAML_NODES = 200_000
#: The deepest nesting of YAML collections.
MAX_YAML_DEPTH = 64


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: Path, error: type[CoatsearchError], what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file ``path``; anything else (missing, a directory, a pipe,
    a device, too large, unreadable) raises ``error`` in one line naming ``path`` and
    ``what`` was expected. Opened without blocking, so a named pipe is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({os_reason(exc)})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: cannot read the {what}: it is {file_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise error(f"{path}: {info.st_size:,} bytes is more than a {what} holds (at most {limit:,})")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({os_reason(exc)})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while read
        raise error(f"{path}: more than {limit:,} bytes; expected a {what}")
    return data


def read_text(path: Path, error: type[CoatsearchError], what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`read_bytes` decoded as UTF-8 (a byte-order mark allowed); other encodings are
    refused with the line of the first byte that is not UTF-8."""
    data = read_bytes(path, error, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; "
                    f"save the {what} as UTF-8") from None


# --------------------------------------------------------------------------- YAML
class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"{key}: given twice")
        self.key, self.first, self.again = key, first, again


class _TooLarge(yaml.YAMLError):
    pass


#: libyaml's parser where PyYAML was built with it (ten times faster than Python's).
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[valid-type, misc]
    """PyYAML's safe loader that refuses duplicate keys and bounds the expanded document."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        _check_size(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                with contextlib.suppress(TypeError):
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                    seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _check_size(root: Any) -> None:
    """Count ``root``'s nodes as if every alias were expanded (each shared node once, times
    the number of places it appears), refusing past `MAX_YAML_NODES`, a nesting deeper than
    `MAX_YAML_DEPTH` and an alias to itself."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _TooLarge("has an alias inside the collection it refers to")
        if depth > MAX_YAML_DEPTH:
            raise _TooLarge(f"is nested more than {MAX_YAML_DEPTH} levels deep")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            open_nodes.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_YAML_NODES:
                    raise _TooLarge(f"is more than {MAX_YAML_NODES:,} values once its aliases are expanded")
            open_nodes.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root, 0)


def load_yaml(text: str, source: str, error: type[CoatsearchError]) -> Any:
    """``text`` parsed as YAML (safe types only); any problem raises ``error`` in one line
    that starts with ``source``: malformed YAML (with its line), a key given twice, a
    document too large or deep once its aliases are expanded."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _DuplicateKey as exc:
        raise error(f"{source}: {exc.key}: given twice (lines {exc.first} and {exc.again}); keep one") from None
    except _TooLarge as exc:
        raise error(f"{source}: the YAML {exc}") from None
    except RecursionError:
        raise error(f"{source}: malformed YAML: exceeded maximum nesting depth") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{source}: malformed YAML{at}: {getattr(exc, 'problem', None) or 'not valid YAML'}") from None


def load_yaml_file(path: Path, error: type[CoatsearchError], what: str) -> Any:
    """`read_text` then `load_yaml`."""
    return load_yaml(read_text(path, error, what), str(path), error)


# --------------------------------------------------------------------------- writing
def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: a reader never
    sees half a file, a failed write (a full disk) leaves the old one whole, and a symbolic
    link at ``path`` is replaced by the file, never written through. `OSError` naming
    ``path`` on failure, with the temporary file removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # named by the file, not the temporary
        raise
