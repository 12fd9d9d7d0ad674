"""The package is one-way: no import circle, nothing imports the command line, evaluation does not
import training, and every module's size stays under the house limit. Read from the source (AST),
so the test sees lazy imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ccdn", "baselines")
MAX_LINES = 500


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (module level or in functions)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import ccdn.data.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def test_the_graph_sees_lazy_imports_and_finds_a_planted_circle():
    graph = import_graph()
    assert "ccdn.data.crop" in graph["ccdn.evaluate"]  # imported inside a function
    planted = {name: set(deps) for name, deps in graph.items()}
    planted["ccdn.errors"].add("ccdn.evaluate")
    cycle = find_cycle(planted)
    assert cycle is not None and "ccdn.errors" in cycle and "ccdn.evaluate" in cycle


def test_there_is_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_imports_the_command_line():
    importers = sorted(name for name, deps in import_graph().items() if "ccdn.cli" in deps)
    assert importers == [], f"modules importing ccdn.cli (move what they need down a layer): {importers}"


def test_evaluation_does_not_import_training():
    deps = import_graph()["ccdn.evaluate"]
    assert not {d for d in deps if d == "ccdn.train" or d.startswith("ccdn.training")}


def test_the_bottom_layer_imports_nothing_from_the_package():
    graph = import_graph()
    for name in ("ccdn.errors", "ccdn.io"):
        assert not {d for d in graph[name] if d.split(".")[0] in PACKAGES}, name


def test_no_module_is_longer_than_the_house_limit():
    long = {name: n for name, path in module_files().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"
