"""shopctl's import graph has no cycles, and no module outside shopctl.runtime reaches
into a runtime's private attributes (issue 15).

Read with `ast`, so nothing is imported: every `import` counts, at module level and
inside functions alike (a function-level import hides a cycle from Python, not from
the design). Only imports under `if TYPE_CHECKING:` are left out: they never run.
`from pkg import name` is an edge to pkg.name when that is a module of shopctl, else
to pkg.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shopctl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for child in node.body:
                skipped.update(id(inner) for inner in ast.walk(child))
    return skipped


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_function_level_and_from_imports():
    graph = import_graph()
    assert "shopctl.runtime.docker" in graph["shopctl.runtime.select"]  # inside a function
    assert "shopctl.units" in graph["shopctl.runtime.base"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_shopctl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# -- private attributes of runtimes ----------------------------------------------------

# What names a runtime object outside shopctl.runtime: a variable or attribute called
# runtime, or one of the runtime classes' instances by a conventional name.
RUNTIME_NAMES = {"runtime", "rt", "docker_runtime", "local_runtime"}


def _names_runtime(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in RUNTIME_NAMES or node.id.endswith("_runtime")
    if isinstance(node, ast.Attribute):  # self.runtime, shop.runtime
        return node.attr in RUNTIME_NAMES or node.attr.endswith("_runtime")
    if isinstance(node, ast.Call):  # DockerRuntime(...)._x, make_runtime(...)._x
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return called.endswith("Runtime") or called.endswith("_runtime")
    return False


def private_runtime_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and _names_runtime(node.value)):
            found.append((node.lineno, ast.unparse(node)))
        # getattr(runtime, "_x")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                and _names_runtime(node.args[0]) and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_private_access_check_catches_the_usual_spellings():
    code = ("runtime._remove(x)\nself.runtime._container('a')\nshop.runtime._images\n"
            "DockerRuntime()._check_port(1, 'x')\ngetattr(runtime, '_launch')\n"
            "runtime.start_unit(c, s)\nself._runtime_lock\n")
    assert sorted(line for line, _ in private_runtime_uses(ast.parse(code))) == [1, 2, 3, 4, 5]


def test_no_module_outside_the_runtimes_touches_a_runtime_private():
    runtime_dir = PACKAGE / "runtime"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py")) if runtime_dir not in path.parents
        for line, text in private_runtime_uses(ast.parse(path.read_text()))
    ]
    assert offenders == [], "\n".join(offenders)
