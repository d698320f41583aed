"""Every import points down the layer order written in docs/ARCHITECTURE.md, and no import cycle exists.

Imports are read with ``ast`` from every module of ``visattn/``, including imports inside functions (a lazy
import is still a dependency). The layer order is parsed from the ``Layer order:`` line of the document, so
the document and the code cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "visattn"
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def layer_order() -> dict[str, int]:
    """``top-level name → level`` (0 = bottom) from the document's ``Layer order: `a > b, c > ...` `` line."""
    match = re.search(r"^Layer order: `([^`]+)`", DOC.read_text(), re.MULTILINE)
    assert match, f"{DOC}: no 'Layer order: `...`' line"
    levels = [part.split(",") for part in match.group(1).split(">")]
    return {
        name.strip(): len(levels) - 1 - i for i, names in enumerate(levels) for name in names if name.strip()
    }


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The visattn modules ``name`` imports (``from pkg import mod`` resolves to the module when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m == "visattn" or m.startswith("visattn.")}


def top_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "visattn"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) - {name} for name, path in found.items()}


def test_the_document_names_every_top_level_package_and_module():
    order = layer_order()
    tops = {top_of(m) for m in modules()} - {"visattn"}
    assert tops <= set(order), f"not in the layer order of {DOC.name}: {sorted(tops - set(order))}"


def test_every_import_points_down(graph):
    order = layer_order()
    bad = []
    for module, targets in graph.items():
        mine = order.get(top_of(module), max(order.values()) + 1)
        for target in targets:
            theirs = order.get(top_of(target), max(order.values()) + 1)
            if theirs > mine:
                bad.append(f"{module} (level {mine}) imports {target} (level {theirs})")
    assert not bad, "imports pointing up the layer order:\n" + "\n".join(sorted(bad))


def test_export_bench_viz_reach_training_only_through_inference(graph):
    bad = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if top_of(module) in ("export", "bench", "viz")
        for target in targets
        if top_of(target) in ("engine", "cli", "demo")
    ]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components: any component with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative import are both found."""
    path = tmp_path / "mod.py"
    path.write_text("from .base import x\n\ndef f():\n    from visattn.cli import main\n")
    found = imports_of("visattn.engine.mod", path, {"visattn.engine.base", "visattn.cli"})
    assert found == {"visattn.engine.base", "visattn.cli"}
