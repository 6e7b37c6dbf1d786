"""The package's layering: no import cycle, and each part reads only the parts below it.

The layers, lowest first (docs/architecture.md): errors/units/validation/status/host/objectives/perimage,
spec, presets, nn and analytic, flops, budget, scaling, data, train, knobs, space, search, results,
analysis, runner, report, studies, commands, cli. Every import counts, those inside functions too.
"""

from __future__ import annotations

import grimp
import pytest

LAYERS = [
    {"errors", "units", "validation", "status", "host", "objectives", "perimage"},
    {"spec"},
    {"presets"},
    {"nn", "analytic"},
    {"flops"},
    {"budget"},
    {"scaling"},
    {"data"},
    {"train"},
    {"knobs"},
    {"space"},
    {"search"},
    {"results"},
    {"analysis"},
    {"runner"},
    {"report"},
    {"studies"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("coatsearch", cache_dir=None)


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle(graph):
    assert _cycles(graph) == []


def test_every_part_has_a_layer(graph):
    parts = {_part(m) for m in graph.modules} - {None}
    assert parts <= set(LEVEL), sorted(parts - set(LEVEL))


def test_each_part_imports_only_parts_below_it(graph):
    upward = []
    for module in sorted(graph.modules):
        here = _part(module)
        if here is None:  # the package's own __init__ re-exports the public API
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            there = _part(imported)
            if there is not None and there != here and LEVEL[there] >= LEVEL[here]:
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_the_counts_never_read_the_module(graph):
    assert not [m for m in graph.find_modules_directly_imported_by("coatsearch.analytic") if m.startswith("coatsearch.nn")]


def test_the_checker_sees_a_cycle():
    """The cycle finder itself, on a graph with a known cycle."""
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]
