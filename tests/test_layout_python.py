"""Layering of the Python package, checked from the source text (nothing is imported).

Two rules of the codebase are enforced here:
- no import cycles among `python/webkiln` modules, counting imports inside functions too
  (a function-level import still makes the two modules depend on each other, it only hides it),
  nor among its subpackages (`models` importing `sources` while `sources` imports `models` is a
  cycle even when no single pair of modules is);
- every exception class named `...Error` derives from `webkiln.errors.WebkilnError`, so the
  CLI can print any user-facing error without a traceback.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python" / "webkiln"
PACKAGE = "webkiln"
ERROR_ROOT = f"{PACKAGE}.errors.WebkilnError"


def module_name(path: Path, root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def package_modules(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}


def _base_package(module: str, path: Path) -> str:
    """The package a relative import in `module` is relative to."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(base: str, level: int, name: str | None) -> str:
    parts = base.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _known(candidate: str, modules: Iterable[str]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package (or None)."""
    modules = set(modules)
    while candidate:
        if candidate in modules:
            return candidate
        candidate = candidate.rpartition(".")[0]
    return None


def _parents_outside(target: str, importer: str) -> list[str]:
    """Importing `a.b.c` runs `a/__init__` and `a/b/__init__` first, except for the packages the
    importer is itself inside (those are already being imported)."""
    parts = target.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    return [p for p in parents if not (importer == p or importer.startswith(p + "."))]


def imports_of(module: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Every package module `module` imports, wherever the import statement is, with the
    package `__init__` modules that importing it runs."""
    modules = set(modules)
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                origin = _resolve_relative(_base_package(module, path), node.level, node.module)
            else:
                origin = node.module or ""
            # `from pkg import name` imports pkg, and also pkg.name when that is a submodule.
            for alias in node.names:
                target = _known(f"{origin}.{alias.name}", modules) if alias.name != "*" else None
                if target and target != origin:
                    found.add(target)
                elif (target := _known(origin, modules)) is not None:
                    found.add(target)
    for target in list(found):
        found.update(p for p in _parents_outside(target, module) if p in modules)
    found.discard(module)
    return found


def import_graph(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        # Recursion depth is bounded by the package's module count (~100), far under the limit.
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _describe(component: list[str], graph: Mapping[str, Iterable[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges)


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_resolution(tmp_path: Path) -> None:
    """Relative, absolute, `from pkg import submodule` and function-level imports all count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import thing\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from .. import top\n    return top\n")
    (pkg / "top.py").write_text("from pkg.sub import leaf\nimport pkg.other\n")
    (pkg / "other.py").write_text("from .sub.leaf import f\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    # Importing pkg.sub.leaf from outside pkg.sub runs pkg/sub/__init__ first.
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.leaf", "pkg.other"}
    assert graph["pkg.other"] == {"pkg.sub", "pkg.sub.leaf"}
    assert cycles(graph) == [["pkg.other", "pkg.sub", "pkg.sub.leaf", "pkg.top"]]


def subpackage_graph(graph: Mapping[str, Iterable[str]], package: str = PACKAGE) -> dict[str, set[str]]:
    """The module graph collapsed to the package's direct children (`webkiln.models.llm` ->
    `webkiln.models`); the package's own `__init__` is left out (everything is inside it)."""

    def child(name: str) -> str | None:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else None

    collapsed: dict[str, set[str]] = {}
    for name, targets in graph.items():
        source = child(name)
        if source is None:
            continue
        edges = collapsed.setdefault(source, set())
        edges.update(t for t in map(child, targets) if t is not None and t != source)
    return collapsed


def test_no_import_cycles_in_webkiln() -> None:
    graph = import_graph()
    assert len(graph) > 30, "the package was not found"
    found = cycles(graph)
    assert not found, "import cycles in python/webkiln:\n" + "\n".join(_describe(c, graph) for c in found)


def test_no_import_cycles_between_subpackages() -> None:
    graph = subpackage_graph(import_graph())
    assert "webkiln.sources" in graph and "webkiln.models" in graph
    found = cycles(graph)
    assert not found, ("import cycles between python/webkiln's subpackages:\n"
                       + "\n".join(_describe(c, graph) for c in found))


def test_subpackage_graph_finds_a_cycle_no_module_pair_has() -> None:
    graph = {"webkiln.a.x": {"webkiln.b.y"}, "webkiln.b.y": set(), "webkiln.b.z": {"webkiln.a.w"},
             "webkiln.a.w": set(), "webkiln": {"webkiln.a.x"}}
    assert cycles(graph) == []
    assert cycles(subpackage_graph(graph)) == [["webkiln.a", "webkiln.b"]]


def _class_bases() -> dict[str, list[str]]:
    """Every class of the package by qualified name, with its bases resolved to qualified names."""
    modules = package_modules()
    classes: dict[str, list[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                origin = (_resolve_relative(_base_package(module, path), node.level, node.module)
                          if node.level else node.module or "")
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{origin}.{alias.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names.setdefault(node.name, f"{module}.{node.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[f"{module}.{node.name}"] = [names.get(ast.unparse(b), ast.unparse(b)) for b in node.bases]
    return classes


def _canonical(name: str, classes: Mapping[str, list[str]]) -> str:
    """Follow re-exports: `webkiln.sources.SourceError` is `webkiln.sources.base.SourceError`."""
    if name in classes:
        return name
    short = name.rpartition(".")[2]
    matches = [c for c in classes if c.endswith("." + short) and c.startswith(name.rpartition(".")[0] + ".")]
    return matches[0] if len(matches) == 1 else name


def _derives_from_root(name: str, classes: Mapping[str, list[str]], seen: frozenset[str] = frozenset()) -> bool:
    name = _canonical(name, classes)
    if name == ERROR_ROOT:
        return True
    if name in seen or name not in classes:
        return False
    return any(_derives_from_root(base, classes, seen | {name}) for base in classes[name])


def test_every_error_derives_from_webkilnerror() -> None:
    classes = _class_bases()
    assert ERROR_ROOT in classes
    errors = [name for name in classes if name.endswith("Error") and name != ERROR_ROOT]
    assert errors, "no error classes found: the scan is broken"
    outside = sorted(name for name in errors if not _derives_from_root(name, classes))
    assert not outside, f"errors not derived from {ERROR_ROOT}: {outside}"


def test_error_check_can_fail() -> None:
    classes = {ERROR_ROOT: ["Exception"], "m.Good": ["webkiln.errors.WebkilnError"], "m.Bad": ["ValueError"]}
    assert _derives_from_root("m.Good", classes)
    assert not _derives_from_root("m.Bad", classes)


def private_imports(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> list[str]:
    """`from .x import _name` anywhere in the package: a helper two modules share is public in a
    module of its own, not one module's private name (the way bench_image once used bench's)."""
    found = []
    for module, path in package_modules(root, package).items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(package + ".")):
                found += [f"{module}: {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_private_names_imported_across_modules(tmp_path: Path) -> None:
    assert private_imports() == []
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _helper():\n    pass\n")
    (pkg / "b.py").write_text("from .a import _helper\nfrom . import __doc__\n")
    assert private_imports(pkg, "pkg") == ["pkg.b: _helper"]
