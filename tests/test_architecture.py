"""The architecture contract (docs/architecture.md): the package's floors run one way, nothing
imports in a circle, the core never imports the GUI package, and no room outgrows a reader.

Read from the source with ``ast``: no import of the package is needed, so a violation is
reported by name even when it would make the import itself fail."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "task_scheduler"
WEB = ROOT / "task_scheduler_web"

# Bottom to top. A module may import (at run time) from its own floor and the floors below;
# `if TYPE_CHECKING:` imports are annotations only and may name any module. A new module must be
# given a floor here: that is the moment to decide what it may know about.
FLOORS = [
    ("shapes", {"errors", "text", "timeutil", "config", "models", "explain", "loops",
                "groupcommit"}),
    ("rules", {"triggers", "calendars", "checks", "jobsfile", "output", "processes", "yamltext",
               "workflow", "after"}),
    ("storage and execution", {"store", "store.dialect", "store.schema", "store.database",
                               "store.runs", "store.liveness", "store.schedules", "store.nodes",
                               "store.queries", "store.jobs", "store.notes", "store.sessions",
                               "store.retention", "store.sla", "store.audit", "store.workflows",
                               "store.after", "store.users", "store.starts", "history", "executor",
                               "capture", "fence", "forkserver", "bus", "lockfile"}),
    ("parts", {"book", "runner", "scheduler", "cluster", "notify", "reload", "metrics",
               "builtin", "jobs", "status", "runlog", "yamledit", "changes", "sla",
               "audit", "access"}),
    ("front door", {"service"}),
    ("http", {"http", "http.io", "http.guard", "http.api", "http.openapi", "http.app",
              "http.server", "http.auth", "http.accounts", "client"}),
    ("assembly", {"cli", "usercli", "__init__", "__main__"}),
]
FLOOR_OF = {name: level for level, (_, names) in enumerate(FLOORS) for name in names}
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 300
REPEAT_LINES = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def imports_of(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, runtime?) for each import in the module; relative imports are
    resolved to absolute names (``task_scheduler.x.y``)."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_blocks(tree)
    here = ["task_scheduler", *name.split(".")] if name != "__init__" else ["task_scheduler"]
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        runtime = id(node) not in typing_only
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, runtime) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                found.append((target, node.lineno, runtime))
            else:   # from . import x: each name is a module
                found += [(f"{target}.{alias.name}", node.lineno, runtime)
                          for alias in node.names]
    return found


def internal(target: str) -> str | None:
    """The package module an import names (``__init__`` for the root), or None for anything
    outside the package."""
    if target == "task_scheduler":
        return "__init__"
    if not target.startswith("task_scheduler."):
        return None
    target = target[len("task_scheduler."):]
    while target and target not in modules():
        target = target.rpartition(".")[0]   # an attribute imported from a module
    return target or None


def runtime_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for name, path in modules().items():
        for target, _, runtime in imports_of(name, path):
            dep = internal(target)
            if runtime and dep and dep != name:
                graph[name].add(dep)
    return graph


def test_every_module_has_a_floor():
    missing = sorted(set(modules()) - set(FLOOR_OF))
    assert not missing, f"give these modules a floor in FLOORS: {missing}"


def test_no_module_imports_a_floor_above_its_own():
    upward = []
    for name, path in modules().items():
        for target, line, runtime in imports_of(name, path):
            dep = internal(target)
            if runtime and dep in FLOOR_OF and name in FLOOR_OF and FLOOR_OF[dep] > FLOOR_OF[name]:
                upward.append(f"task_scheduler/{path.relative_to(PACKAGE)}:{line} "
                              f"({FLOORS[FLOOR_OF[name]][0]}) imports {dep} "
                              f"({FLOORS[FLOOR_OF[dep]][0]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = runtime_graph()
    graph.pop("__init__")   # the public surface re-exports; submodules never import it
    for deps in graph.values():
        assert "__init__" not in deps, "a module imports the package root: import the module"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_never_imports_the_gui_package_except_the_cli():
    found = [f"{name}:{line}" for name, path in modules().items() if name != "cli"
             for target, line, _ in imports_of(name, path)
             if target and target.split(".")[0] == "task_scheduler_web"]
    assert not found, f"the core imports task_scheduler_web at {found}"
    text = "\n".join(p.read_text() for n, p in modules().items() if n != "cli")
    assert "import_module(\"task_scheduler_web" not in text


def test_the_gui_package_imports_the_core_one_way():
    """task_scheduler_web may import the core's modules, never the CLI (the assembly above it)."""
    for path in sorted(WEB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("task_scheduler"):
                assert node.module not in ("task_scheduler.cli", "task_scheduler.__main__"), \
                    f"{path.name}:{node.lineno} imports {node.module}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_or_class_outgrows_a_reader(name):
    path = modules()[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, \
        f"{name} has {text.count(chr(10))} lines (at most {MAX_MODULE_LINES}): a concept is hiding"
    big = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
           if isinstance(node, ast.ClassDef)
           and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]
    assert not big, f"{name}: classes over {MAX_CLASS_LINES} lines: {big}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_says_what_it_owns(name):
    tree = ast.parse(modules()[name].read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc) > 30, f"{name} has no docstring saying what it owns"


def significant_lines(path: Path) -> list[tuple[int, str]]:
    """Lines that carry code: no blanks, comments, imports or lone brackets."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = " ".join(line.split())
        if not text or text.startswith(("#", "import ", "from ")) or len(text) <= 3:
            continue
        out.append((number, text))
    return out


def repeated_blocks(paths: list[Path], size: int = REPEAT_LINES) -> list[str]:
    seen: dict[str, str] = {}
    repeats = []
    for path in paths:
        lines = significant_lines(path)
        for i in range(len(lines) - size + 1):
            window = lines[i:i + size]
            key = hashlib.sha1("\n".join(t for _, t in window).encode()).hexdigest()
            where = f"{path.relative_to(ROOT)}:{window[0][0]}"
            if key in seen:
                repeats.append(f"{where} repeats {seen[key]}")
            seen.setdefault(key, where)
    return repeats


def test_no_block_of_six_lines_is_repeated_in_the_package():
    repeats = repeated_blocks(sorted(PACKAGE.rglob("*.py")))
    assert not repeats, "blocks written twice:\n" + "\n".join(repeats[:20])


def test_the_repeat_finder_finds_a_repeat(tmp_path):
    block = "".join(f"value_{i} = compute({i}) + other({i})\n" for i in range(REPEAT_LINES))
    (tmp_path / "a.py").write_text(block)
    (tmp_path / "b.py").write_text("x = 1\n" + block)
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert repeated_blocks([tmp_path / "a.py", tmp_path / "b.py"])
        assert not repeated_blocks([tmp_path / "a.py"])
    finally:
        ROOT = saved


def test_floors_and_counts_are_reported_in_the_architecture_document():
    """docs/architecture.md names every module, so the drawing stays the house."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name in modules() if name not in ("__init__", "__main__", "http", "store")
               and f"{name.replace('.', '/')}.py" not in doc]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_the_graph_sees_known_imports():
    """The checks above would pass on an empty graph: make sure it is read."""
    graph = runtime_graph()
    assert {"runner", "scheduler", "store.schema"} <= graph["service"]
    assert "errors" in graph["config"] and "http.app" in graph["cli"]
    assert not graph["errors"]
