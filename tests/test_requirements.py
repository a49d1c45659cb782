"""One list of runtime dependencies: requirements.txt's pins, which pyproject.toml reads
(``dynamic``), and which name every third-party package the pipeline's code imports."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from tests.conftest import REPO


def pinned() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>!~\[ ;]", line)[0].lower().replace("_", "-"))
    return names


def imported_top_levels() -> set[str]:
    found = set()
    for folder in ("doodle", "stages", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"doodle", "stages", "benchmarks", "tests", "__future__"}


def test_pyproject_reads_its_dependencies_from_requirements_txt():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" not in project["project"] and "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


#: Keras backends the pipeline can run on instead of TensorFlow (doodle.train.strategy): imported only
#: under KERAS_BACKEND=jax, where the machine brings it (requirements-dev pins jax[cpu] for the test).
OTHER_BACKENDS = {"jax"}


def test_every_imported_package_is_pinned():
    dists = packages_distributions()
    pins = pinned()
    missing = {}
    for module in sorted(imported_top_levels() - OTHER_BACKENDS):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if module == "tensorflow":  # tensorflow-cpu here; a GPU machine installs tensorflow (README)
            names |= {"tensorflow-cpu", "tensorflow"}
        if not names & pins:
            missing[module] = sorted(names) or "not installed"
    assert not missing, f"imported but not in requirements.txt: {missing}"
