"""The package's layering, read from the code's own imports: the model kernel (loopdev.sim)
imports nothing from the lab or the CLI; no module-level imports go round in a circle; and in
the model and the lab not even imports made inside functions do. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import loopdev

ROOT = Path(loopdev.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _target(name: str) -> str | None:
    """The loopdev module an import of ``name`` loads (a module, or a name in a package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _runtime_imports(path: Path, *, in_functions: bool) -> set[str]:
    """The loopdev modules ``path`` imports at module level (and inside functions)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if not in_functions and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [f"{child.module}.{a.name}" for a in child.names]
            else:
                visit(child)
                continue
            for n in names:
                t = _target(n)
                if t is not None:
                    found.add(t)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


#: module -> the loopdev modules it imports when it is loaded
AT_IMPORT = {
    name: _runtime_imports(path, in_functions=False) - {name} for name, path in MODULES.items()
}
#: module -> the loopdev modules it imports when loaded or while it runs
AT_RUN = {name: _runtime_imports(path, in_functions=True) - {name} for name, path in MODULES.items()}


def test_the_model_imports_nothing_from_the_lab_or_the_cli() -> None:
    bad = {
        (m, t)
        for m, targets in AT_RUN.items()
        if m.startswith("loopdev.sim")
        for t in targets
        if t.startswith(("loopdev.lab", "loopdev.cli"))
    }
    assert not bad, sorted(bad)


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def dfs(m: str) -> list[str] | None:
        path.append(m)
        on_path.add(m)
        for t in sorted(graph.get(m, ())):
            if t in on_path:
                return [*path[path.index(t) :], t]
            if t not in done:
                found = dfs(t)
                if found:
                    return found
        on_path.discard(path.pop())
        done.add(m)
        return None

    return dfs(start)


def test_no_import_cycle_when_modules_load() -> None:
    for m in sorted(AT_IMPORT):
        cycle = _cycle_from(m, AT_IMPORT)
        assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_in_the_model_or_the_lab() -> None:
    """Also counting imports made inside functions (a deferred import back is still a loop)."""
    ours = ("loopdev.sim", "loopdev.lab")
    graph = {m: {t for t in ts if t.startswith(ours)} for m, ts in AT_RUN.items() if m.startswith(ours)}
    for m in sorted(graph):
        cycle = _cycle_from(m, graph)
        assert cycle is None, " -> ".join(cycle)
