"""dvc.yaml tells the truth: every project module a stage imports is among its deps and no other, and every
section's dataclass defaults equal params.yaml (one source of defaults)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from doodle.sections import SECTIONS
from tests.conftest import REPO, imported_modules, module_file


def project_closure(module: str) -> set[Path]:
    """The files of ``module`` and of every project module it imports, transitively, with the
    __init__.py of each package on the way (Python runs them on import)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path))
    return seen


def stages():
    """Each stage's definition; a ``foreach`` group's (train: one stage per model) is its ``do``."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    spec = {name: s.get("do", s) for name, s in spec.items()}
    return {name: s for name, s in spec.items() if s["cmd"].startswith("python -m stages.")}


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_imported_project_module_is_a_dep(stage):
    spec = stages()[stage]
    module = spec["cmd"].split()[2]
    deps = [REPO / d for d in spec.get("deps", []) if "${" not in d]
    missing = [
        str(f.relative_to(REPO))
        for f in sorted(project_closure(module))
        if not any(f == d or d in f.parents for d in deps)
    ]
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_code_dep_is_imported_by_its_stage(stage):
    """No stale dep: a module a stage no longer imports would rerun it for nothing."""
    spec = stages()[stage]
    needed = project_closure(spec["cmd"].split()[2])
    code = [d.split()[0] for d in spec.get("deps", []) if d.startswith(("doodle", "stages")) and "${" not in d]
    stale = [d for d in code if not any(f == REPO / d or REPO / d in f.parents for f in needed)]
    assert not stale, f"dvc.yaml stage {stage!r} lists {stale} in deps but does not import them"


def test_the_closure_sees_imports_inside_functions():
    files = {str(p.relative_to(REPO)) for p in project_closure("stages.predict")}
    # cli at module level, params through doodle.predict.run, metrics through its submission module
    assert {"stages/cli.py", "doodle/core/errors.py", "doodle/core/params.py", "doodle/core/metrics.py"} <= files


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_code_defaults_equal_params_yaml(section):
    cls = SECTIONS[section]
    params = yaml.safe_load((REPO / "params.yaml").read_text())[section]
    defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
    assert set(defaults) == set(params), f"params.yaml section {section} and {cls.__name__} name other keys"
    differ = {k: (defaults[k], params[k]) for k in defaults if defaults[k] != params[k]}
    if section == "train" and "augment" in differ:  # {} in code means every augmentation at its (off) default
        from doodle.models import AugmentParams

        if dataclasses.asdict(AugmentParams(**defaults["augment"])) == params["augment"]:
            differ.pop("augment")
    assert not differ, f"{cls.__name__} defaults differ from params.yaml ({section}): (code, yaml) {differ}"
