"""Shared test helpers: a tiny project directory with its own params.yaml, and the real data."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
KAGGLE = SHARED / "quickdraw-kaggle"
NDJSON = SHARED / "quickdraw-ndjson"

needs_kaggle = pytest.mark.skipif(not KAGGLE.is_dir(), reason=f"{KAGGLE} not present")
needs_ndjson = pytest.mark.skipif(not NDJSON.is_dir(), reason=f"{NDJSON} not present")

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


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """A tiny project with sample, shard and render done, built once per test run. Tests read
    it or copy it (``shutil.copytree``) before running later stages in it."""
    d = tmp_path_factory.mktemp("proj")
    write_params(d / "params.yaml")
    cwd = os.getcwd()
    os.chdir(d)
    try:
        from stages import render, sample, shard

        sample.main(["--quiet"])
        shard.main(["--quiet"])
        render.main(["--quiet"])
    finally:
        os.chdir(cwd)
    return d
