"""The layer order of detkit/ (docs/architecture.md), kept by reading every import.

Every ``import`` and ``from ... import`` of a detkit module inside detkit/ (at the top of a file or
inside a function) must point down the layer order, or stay inside its own package; no chain of
imports may come back to where it started. Imports under ``if TYPE_CHECKING:`` never run: they are
held to the order but do not count for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detkit"

# Lowest first. A module may import from a lower layer, or from its own top-level package; modules
# that share a layer but not a package (modeling and data, for instance) never import each other.
LAYERS: List[Set[str]] = [
    {"errors", "version"},
    {"atomic_io", "safe_load"},
    {"hub"},
    {"config"},
    {"runtime"},
    {"ops", "testing"},
    {"modeling", "data", "vis"},
    {"weights"},
    {"anchors"},
    {"evaluation"},
    {"engine"},
    {"deploy", "report"},
    {"cli", "__init__"},
    {"__main__"},
]
# ops/ is the torchvision.ops of detkit: box functions and kernels that stand alone.
ONLY_FROM: Dict[str, Set[str]] = {"ops": {"errors"}}


class Edge(NamedTuple):
    source: str  # dotted module name, e.g. detkit.engine.trainer
    target: str
    path: Path
    line: int
    runs: bool  # False under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(dotted: str) -> bool:
    return (PACKAGE.parent / Path(*dotted.split(".")) / "__init__.py").exists()


def exists(dotted: str) -> bool:
    return is_package(dotted) or (PACKAGE.parent / Path(*dotted.split("."))).with_suffix(".py").exists()


def top_level(dotted: str) -> str:
    """The top-level unit of detkit a module belongs to: 'engine' for detkit.engine.hooks.base,
    'config' for detkit.config, '__init__' for the package's own __init__.py."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_lines(tree: ast.AST) -> Set[int]:
    lines: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> Iterator[Edge]:
    """Every detkit module ``path`` imports (top-level or local), one edge per imported module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    source = module_name(path)
    guarded = _type_checking_lines(tree)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from detkit.engine import hooks` imports the module detkit.engine.hooks
                candidate = f"{base}.{alias.name}"
                targets.append(candidate if exists(candidate) else base)
        for target in targets:
            if target == "detkit" or target.startswith("detkit."):
                yield Edge(source, target, path, node.lineno, node.lineno not in guarded)


def all_edges() -> List[Edge]:
    return [edge for path in sorted(PACKAGE.rglob("*.py")) for edge in imports_of(path)]


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"detkit/{unit} is in no layer of tests/test_layers.py: add it to LAYERS "
                         f"(and to the layer order in docs/architecture.md)")


def layer_violations(edges: List[Edge]) -> List[str]:
    problems = []
    for edge in edges:
        src, dst = top_level(edge.source), top_level(edge.target)
        if src == dst:
            continue
        where = f"{edge.path.relative_to(PACKAGE.parent)}:{edge.line}: {edge.source} imports {edge.target}"
        if src in ONLY_FROM and dst not in ONLY_FROM[src]:
            problems.append(f"{where} ({src} may import only {', '.join(sorted(ONLY_FROM[src]))})")
        elif layer_of(dst) >= layer_of(src):
            how = "the same layer" if layer_of(dst) == layer_of(src) else "a higher layer"
            problems.append(f"{where}: layer '{src}' (#{layer_of(src)}) imports '{dst}' (#{layer_of(dst)}), "
                            f"{how}")
    return problems


def find_cycles(edges: List[Edge]) -> List[List[str]]:
    """Every strongly connected group of two or more modules (or one that imports itself), as a path."""
    graph: Dict[str, Set[str]] = {}
    for edge in edges:
        if edge.runs:
            graph.setdefault(edge.source, set()).add(edge.target)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm (the graph has a few hundred nodes: recursion is fine)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_detkit_import_points_down_the_layers():
    problems = layer_violations(all_edges())
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycle():
    edges = all_edges()
    cycles = find_cycles(edges)
    lines = []
    for group in cycles:
        members = set(group)
        links = [f"  {e.path.relative_to(PACKAGE.parent)}:{e.line}: {e.source} -> {e.target}"
                 for e in edges if e.runs and e.source in members and e.target in members]
        lines.append(" <-> ".join(group) + "\n" + "\n".join(links))
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_every_unit_of_detkit_has_a_layer():
    units = {top_level(module_name(p)) for p in PACKAGE.rglob("*.py")}
    for unit in units:
        layer_of(unit)


# ---------------------------------------------------------------- the checker itself fails when it must
def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    root = tmp_path / "detkit"
    for name in ("__init__.py", "ops/__init__.py", "engine/__init__.py", "data/__init__.py",
                 "modeling/__init__.py"):
        _write(root, name, "")
    monkeypatch.setitem(globals(), "PACKAGE", root)
    return root


def test_checker_names_file_line_and_layers_of_an_upward_local_import(fake_package):
    _write(fake_package, "ops/boxes.py", "def f():\n    from detkit.engine import trainer\n")
    _write(fake_package, "engine/trainer.py", "")
    problems = layer_violations(all_edges())
    assert len(problems) == 1 and "detkit/ops/boxes.py:2" in problems[0] and "ops" in problems[0]
    _write(fake_package, "ops/boxes.py", "")
    _write(fake_package, "data/x.py", "import detkit.modeling\n")  # same layer, other package
    problems = layer_violations(all_edges())
    assert len(problems) == 1 and "'data'" in problems[0] and "'modeling'" in problems[0]


def test_checker_finds_a_cycle_hidden_by_a_local_import_and_ignores_type_checking(fake_package):
    _write(fake_package, "data/index.py", "def f():\n    from detkit.data.dataset import D\n")
    _write(fake_package, "data/dataset.py", "from detkit.data import index\nD = 1\n")
    assert find_cycles(all_edges()) == [["detkit.data.dataset", "detkit.data.index"]]
    _write(fake_package, "data/index.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from detkit.data.dataset import D\n")
    assert find_cycles(all_edges()) == []
