"""The library's shape, as doodle/__init__.py draws it: subpackages in floors, each importing only
from itself and the floors listed before it, none importing a stage, a benchmark or a test; no import
cycle; no private name imported across modules; no function longer than a screen, numba kernels
aside (a compiled loop is kept whole on purpose)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO, imported_modules

#: From the foundation up, as in doodle/__init__.py's docstring.
FLOORS = [
    "core",
    "drawing",
    "sources",
    "sample",
    "shard",
    "render",
    "batches",
    "models",
    "train",
    "baseline",
    "predict",
    "evaluate",
    "score",
]
TOP = {"sections", "recipes", "routes", "lineup"}  # doodle/<name>.py above every subpackage
LONGEST_FUNCTION = 80  # lines


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / "doodle").rglob("*.py"))}


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (anywhere, functions included; TYPE_CHECKING too)."""
    mods = library()
    return {m for m in imported_modules(path) if m in mods or m.split(".")[0] in ("stages", "benchmarks", "tests")}


def floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # doodle/__init__.py: the map, imports core only
    if parts[1] in TOP:
        return len(FLOORS)
    return FLOORS.index(parts[1])


def test_every_subpackage_is_on_a_floor():
    subpackages = {p.parent.name for p in (REPO / "doodle").glob("*/__init__.py")}
    assert subpackages == set(FLOORS)
    top_modules = {p.stem for p in (REPO / "doodle").glob("*.py")} - {"__init__"}
    assert top_modules == TOP


def test_no_upward_import_and_no_stage_import():
    bad = []
    for name, path in library().items():
        for target in project_imports(path):
            if target.split(".")[0] != "doodle":
                bad.append(f"{name} imports {target} (the library never imports a stage, benchmark or test)")
            elif name != "doodle" and target != "doodle" and floor(target) > floor(name):
                bad.append(f"{name} imports {target}, a floor above it")
    assert not bad, "\n".join(bad)


def test_only_stages_know_the_project_layout():
    """The path constants (doodle.core.paths) are the stages' to pass: library code takes directories."""
    users = [name for name, path in library().items() if "doodle.core.paths" in project_imports(path)]
    assert not users, users
    assert any("doodle.core.paths" in project_imports(p) for p in (REPO / "stages").glob("*.py"))


def test_every_stage_package_has_a_run():
    """Each stage's library package exposes ``run`` in its run module, and its stage calls it."""
    for stage in ("sample", "shard", "render", "train", "baseline", "predict", "evaluate", "score"):
        tree = ast.parse((REPO / "doodle" / stage / "run.py").read_text())
        assert "run" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, stage
        assert f"doodle.{stage}.run" in imported_modules(REPO / "stages" / f"{stage}.py"), stage


def test_tests_mirror_the_library():
    """tests/<package>/ tests doodle/<package>/ (or stages/, benchmarks/); tests/ itself the modules at
    the top of doodle/ and the project's shape."""
    folders = set(FLOORS) | {"stages", "benchmarks"}
    top = {f"test_{m}.py" for m in TOP} | {"test_layout.py", "test_requirements.py"}
    misplaced = [
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("test_*.py")
        if not (p.parent.name in folders and p.parent.parent == REPO / "tests")
        and not (p.parent == REPO / "tests" and p.name in top)
    ]
    assert not misplaced, misplaced


def modules_of_tests() -> set[str]:
    return {module_name(p) for p in (REPO / "tests").rglob("*.py")}


def test_no_test_imports_another_test_module():
    """Shared helpers live in tests/conftest.py; a test module may import only itself (a subprocess
    script that needs its helpers)."""
    bad = []
    for path in (REPO / "tests").rglob("test_*.py"):
        own = module_name(path)
        tests = {m for m in imported_modules(path) if m in modules_of_tests()}
        bad += [f"{own} imports {m}" for m in sorted(tests - {own, "tests.conftest"})]
    assert not bad, bad


def test_no_import_cycle():
    graph = {
        name: {t for t in project_imports(path) if t in library() and t != name} for name, path in library().items()
    }
    graph = {n: {t for t in ts if t != "doodle"} for n, ts in graph.items()}  # every module's package runs it first
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(
                    " -> ".join([*stack[stack.index(nxt) :], node, nxt]) if nxt in stack else f"{node}->{nxt}"
                )
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, cycles


def python_files():
    for folder in ("doodle", "stages", "benchmarks", "tests"):
        yield from sorted((REPO / folder).rglob("*.py"))


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0]
                in (
                    "doodle",
                    "stages",
                    "benchmarks",
                )
            ):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                parts = [p for p in node.module.split(".") if p.startswith("_") and not p.startswith("__")]
                if private or parts:
                    bad.append(f"{path.relative_to(REPO)}: from {node.module} import {', '.join(private) or '...'}")
    assert not bad, bad


def test_conftest_does_not_import_benchmarks():
    """The shared test helpers stand alone (a test of a benchmark may import it; the helpers every
    test loads may not)."""
    imported = imported_modules(REPO / "tests" / "conftest.py")
    assert not [m for m in imported if m.split(".")[0] == "benchmarks"]


def _is_kernel(fn: ast.FunctionDef) -> bool:
    return any("njit" in ast.unparse(d) or "numba" in ast.unparse(d) for d in fn.decorator_list)


@pytest.mark.parametrize("folder", ["doodle", "stages", "benchmarks"])
def test_no_function_longer_than_a_screen(folder):
    long = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_kernel(node):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_every_test_is_time_bounded(pytestconfig, request):
    """pytest-timeout is active with pyproject.toml's limit, so a hang fails one test, not all of CI;
    conftest gives slow tests their own, longer limit."""
    from tests.conftest import SLOW_TIMEOUT_S, pytest_collection_modifyitems

    assert pytestconfig.pluginmanager.hasplugin("timeout") and float(pytestconfig.getini("timeout")) > 0
    slow = pytest.Function.from_parent(request.node.parent, name=request.node.name)
    slow.add_marker(pytest.mark.slow)
    pytest_collection_modifyitems([slow])
    assert slow.get_closest_marker("timeout").args == (SLOW_TIMEOUT_S,)
