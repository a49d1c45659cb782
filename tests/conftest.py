"""Shared test helpers: a tiny project directory with its own params.yaml, and the real data."""

from __future__ import annotations

import ast
import copy
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.cli import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
KAGGLE = SHARED / "quickdraw-kaggle"
NDJSON = SHARED / "quickdraw-ndjson"

SLOW_TIMEOUT_S = 900  # a slow test's limit (pytest-timeout; quick ones: pyproject.toml's timeout)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Each slow test gets :data:`SLOW_TIMEOUT_S` unless it sets its own ``@pytest.mark.timeout``; the
    tests that start from the :func:`reproduced` project run on one pytest-xdist worker, so it is
    built once (``--dist loadgroup``, pyproject.toml)."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
        if "reproduced" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("reproduced"))


needs_kaggle = pytest.mark.skipif(not KAGGLE.is_dir(), reason=f"{KAGGLE} not present")
needs_ndjson = pytest.mark.skipif(not NDJSON.is_dir(), reason=f"{NDJSON} not present")
MNIST = SHARED / "mnist"
BITMAP = SHARED / "quickdraw-bitmap"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"{MNIST} not present")
needs_bitmap = pytest.mark.skipif(not BITMAP.is_dir(), reason=f"{BITMAP} not present")

TINY = {
    "sample": {
        "train_per_class": 60,
        "test_per_class": 6,
        "classes": ["circle", "line", "square", "star"],
        "corrupt_fraction": 0.05,
    },
    "shard": {"count": 3},
    "render": {"size": 32, "workers": 1},
    "train": {"epochs": 2, "batch_size": 32, "steps_per_epoch": 3, "width": 0.125},
    "predict": {"batch_size": 64},
    "evaluate": {"embedding": "pca"},  # t-SNE is the default view; PCA keeps the tests quick
}


# Training long enough to learn TINY's four shapes (157 training, 71 validation drawings): 8 full
# epochs reached val MAP@3 0.87 on a 2-core CPU, against 0.46 for chance (or for a one-class or
# frozen model, or a label mix-up). End-to-end tests that train this long assert LEARNED_FLOOR.
LEARNS = {"train": {"epochs": 8, "steps_per_epoch": None}}
LEARNED_FLOOR = 0.7


HEADER = ["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"]


def write_csv(path, rows, header=HEADER):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def row(key, word="cat", drawing="[[[1,2],[3,4]]]", rec="True", cc="US"):
    return [cc, drawing, key, rec, "2017-03-01 00:00:00.0 UTC", word]


PROJECT_PACKAGES = ("doodle", "stages")


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (a package's __init__.py), or None if not ours."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import anywhere in ``path`` (functions included), absolute."""
    package = ".".join(path.parent.relative_to(REPO).parts)  # what a relative import is relative to
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # kept only if a submodule
    return names


def generated_shards(root: Path, per_class: int, row_group_rows: int) -> Path:
    """3 shards of the generated doodles (``per_class`` training drawings each, none broken) under
    ``root``, ``row_group_rows`` a row group (several a shard: blocks are shuffled); the shard folder."""
    from doodle.sample.generate import SampleParams, generate
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    generate(root / "sample", SampleParams(train_per_class=per_class, test_per_class=0, corrupt_fraction=0.0))
    write_shards(
        resolve_source(root / "sample"), root / "shards", ShardParams(count=3, row_group_rows=row_group_rows), False
    )
    return root / "shards"


def one_epoch(stream, epoch: int = 0):
    """(inputs, labels) of a stream's epoch, every batch concatenated."""
    import numpy as np

    xs, ys = zip(*stream.epoch(epoch))
    return np.concatenate(xs), np.concatenate(ys)


def write_oof(path: Path, keys, labels, probs):
    """An out-of-fold file as train@<name> writes it (doodle.train.folds.OofWriter; one fold)."""
    from types import SimpleNamespace

    import numpy as np

    from doodle.train.folds import OofWriter

    split = SimpleNamespace(keys=[keys], rows=len(keys), all_labels=lambda: labels)
    writer = OofWriter(path, probs.shape[1])
    writer.add_fold(0, SimpleNamespace(split=split, sums=probs.astype(np.float32), members=1))
    writer.close()
    return writer


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_params(path: Path, overrides: dict | None = None) -> dict:
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(TINY, overrides or {}))
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory with a tiny params.yaml; stages write data/, models/... under it."""
    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def work_on_copy(src: Path, dest: Path, monkeypatch, overrides: dict | None = None) -> Path:
    """A copy of the project ``src`` (e.g. the ``rendered`` fixture) at ``dest``, as the working
    directory; with ``overrides``, its params.yaml is the tiny one with them merged in."""
    shutil.copytree(src, dest)
    if overrides is not None:
        write_params(dest / "params.yaml", overrides)
    monkeypatch.chdir(dest)
    return dest


# what a clone takes from the working tree (committed or not); benchmarks.common clones the same way
CLONED_PATHS = ["dvc.yaml", "params.yaml", "stages", "doodle", "benchmarks", ".dvc/config", "requirements.txt"]


def clone_project(dest: Path) -> Path:
    """A git clone of the project at ``dest`` with the working tree's code and pipeline
    (committed or not), for tests that run ``dvc`` as users do."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    for path in CLONED_PATHS:
        src = REPO / path
        if src.is_dir():
            shutil.rmtree(dest / path, ignore_errors=True)
            shutil.copytree(src, dest / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / path)
    return dest


def run_dvc(args: list[str], cwd: Path, timeout: float | None = None) -> str:
    """``dvc ARGS`` in ``cwd`` with the project on the path; its stdout. Fails the test on a non-zero exit."""
    r = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def kill_when(proj: Path, args: list[str], ready, timeout: float = 300) -> None:
    """Start ``dvc ARGS`` in its own process group; SIGKILL the whole group (DVC and the stage's
    processes, as a lost notebook kernel or the OOM killer would) as soon as ``ready()`` holds.
    Fails if the run ended first: the kill must land in the middle of the stage."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=proj,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"dvc {' '.join(args)} ended before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stages_run(dvc_output: str) -> list[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` output says it ran, in order."""
    return [ln.split("'")[1] for ln in dvc_output.splitlines() if ln.startswith("Running stage")]


def git(args: list[str], cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """The tiny project cloned, built by ``dvc repro`` and committed (dvc.lock and the metrics with
    it; data and models in its DVC cache), once per test run: the DVC tests start from a copy
    (:func:`copy_project`) instead of each building the pipeline again. Returns (its path, the
    stages that first ``dvc repro`` ran)."""
    proj = clone_project(tmp_path_factory.mktemp("reproduced") / "repo")
    write_params(proj / "params.yaml")
    ran = stages_run(run_dvc(["repro"], proj))
    git(["add", "-A"], proj)
    git(["commit", "-qm", "the tiny project, reproduced"], proj)
    return proj, ran


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a project, its git repository and DVC cache included (links copied as links)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """A tiny project with sample, shard and render done, built once per test run. Tests read
    it or copy it (``shutil.copytree``) before running later stages in it."""
    d = tmp_path_factory.mktemp("proj")
    write_params(d / "params.yaml")
    return rendered_in(d)


def rendered_in(project: Path) -> Path:
    """Run the sample, shard and render stages in ``project`` (its params.yaml already written)."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        from stages import render, sample, shard

        sample.main(["--quiet"])
        shard.main(["--quiet"])
        render.main(["--quiet"])
    finally:
        os.chdir(cwd)
    return project
