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


#: Packages named whole though a stage's imports do not reach all their modules, and why.
NAMED_WHOLE = {
    "doodle/models": "the registry imports each architecture's builder by name, when a model is built",
}
#: Stages whose code deps are deliberately wider than their imports, and why.
WIDER = {"check": "it loads every section's dataclass; its outputs change only with params.yaml"}


def library_files() -> list[Path]:
    return sorted(p for top in ("doodle", "stages") for p in (REPO / top).rglob("*.py"))


def exact_deps(closure: set[Path]) -> list[str]:
    """The code deps that name exactly ``closure``: a package by name where all its modules (its
    subpackages' too) are in it, else each module in it."""
    files, named = library_files(), []
    for folder in sorted({p.parent for p in files} - {REPO / "doodle", REPO / "stages"}, key=lambda d: len(d.parts)):
        inside = {p for p in files if folder in p.parents}
        rel = str(folder.relative_to(REPO))
        whole = inside <= closure or (rel in NAMED_WHOLE and inside & closure)
        if whole and not any(n in folder.parents for n in named):
            named.append(folder)
    loose = [p for p in closure if not any(n in p.parents for n in named)]
    return sorted(str(p.relative_to(REPO)) for p in [*named, *loose])


def code_deps(spec: dict) -> list[str]:
    return sorted(d for d in spec.get("deps", []) if d.startswith(("doodle", "stages")))


@pytest.mark.parametrize("stage", sorted(set(stages()) - set(WIDER)))
def test_code_deps_are_exactly_the_imported_modules(stage):
    """Every project module the stage imports is a dep (a change to it reruns the stage), and no
    other (a change elsewhere does not): a package named whole only when all of it is imported."""
    spec = stages()[stage]
    want = exact_deps(project_closure(spec["cmd"].split()[2]))
    have = code_deps(spec)
    assert have == want, (
        f"dvc.yaml stage {stage!r}: missing {sorted(set(want) - set(have))}, not imported or not whole "
        f"{sorted(set(have) - set(want))}; its code deps should read:\n" + ", ".join(want)
    )


@pytest.mark.parametrize("stage", sorted(WIDER))
def test_a_wider_stage_still_covers_its_imports(stage):
    spec = stages()[stage]
    deps = [REPO / d for d in code_deps(spec)]
    missing = [p for p in project_closure(spec["cmd"].split()[2]) if not any(p == d or d in p.parents for d in deps)]
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them in deps"


def test_exact_deps_names_a_package_only_when_whole():
    closure = project_closure("stages.render")
    deps = exact_deps(closure)
    assert "doodle/render" in deps  # the stage's own package, all of it imported
    assert "doodle/shard/format.py" in deps and "doodle/shard" not in deps  # one module of another package
    partial = closure - {REPO / "doodle/render/run.py"}
    assert "doodle/render" not in exact_deps(partial)


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
