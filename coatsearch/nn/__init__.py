"""Network modules of the family; `build` turns a `NetSpec` into one."""

from coatsearch.nn.convert import convert
from coatsearch.nn.model import CoAtNet, build

__all__ = ["CoAtNet", "build", "convert"]
