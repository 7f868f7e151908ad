"""The package's import structure: no import cycles, and `stratdiff.errors` imports nothing above it.

Reads the source with `ast` (nothing is imported): every `import stratdiff...` and
`from stratdiff... import ...`, at module level or inside a function, is an edge from the
importing module to the imported one (`if TYPE_CHECKING:` blocks excepted). Run it alone with
`python tests/test_import_structure.py`, which prints any cycle with its path.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "stratdiff"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package in `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's `__init__` counts as itself)."""
    mods = module_files(root)
    top = root.name

    def known(name: str) -> str | None:  # the module that `import name` runs last
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        targets: set[str | None] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(known(a.name) for a in node.names if a.name.split(".")[0] == top)
                continue
            if node.level:  # relative import
                name = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != top:
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{name}.{a.name}"
                targets.add(sub if sub in mods else known(name))
        graph[mod] = {t for t in targets if t is not None and t != mod}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path a -> b -> ... -> a) for each group of modules that import each other."""
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        # modules reachable from `start` that reach it back form its group
        path = _path(graph, start, start)
        if path:
            cycles.append(path)
            done.update(path)
    return cycles


def _path(graph: dict[str, set[str]], src: str, dst: str) -> list[str] | None:
    """The shortest import path src -> ... -> dst (at least one step), or None."""
    prev: dict[str, str] = {}
    frontier = [src]
    seen = set()
    while frontier:
        nxt = []
        for node in frontier:
            for t in sorted(graph.get(node, ())):
                if t == dst:
                    out = [t, node]
                    while out[-1] != src:
                        out.append(prev[out[-1]])
                    return out[::-1]
                if t not in seen:
                    seen.add(t)
                    prev[t] = node
                    nxt.append(t)
        frontier = nxt
    return None


def test_the_package_has_no_import_cycles():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_errors_module_imports_nothing_from_the_package():
    graph = import_graph(PACKAGE)
    assert graph["stratdiff.errors"] == set()
    assert "stratdiff.errors" in graph["stratdiff.runner"]  # the graph does see imports


def test_stratifiers_do_not_import_the_run_loop_or_commands():
    graph = import_graph(PACKAGE)
    above = ("stratdiff.runner", "stratdiff.methods", "stratdiff.experiments", "stratdiff.commands", "stratdiff.cli")
    for mod, targets in graph.items():
        if mod.startswith("stratdiff.stratify"):
            assert not {t for t in targets if t.startswith(above)}, mod


def test_the_check_finds_a_cycle_and_its_path(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")  # lazy and relative
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n")
    (pkg / "e.py").write_text("import pkg.d\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


if __name__ == "__main__":
    found = find_cycles(import_graph(PACKAGE))
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle))
    print(f"{len(found)} import cycle(s) in {PACKAGE}")
    sys.exit(1 if found else 0)
