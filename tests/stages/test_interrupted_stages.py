"""A shard or render stage killed at any point leaves nothing a rerun trusts: the rerun's shards and
cache hash the same as an uninterrupted run's (Kaggle's layout, linked as the routes link it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.kaggle_folder import write_kaggle_folder
from stages.cli import subprocess_env
from tests.conftest import clone_project, kill_when, needs_kaggle, run_dvc, write_params

SCALE = 0.004  # 199k drawings: each pass lasts long enough to be caught in the middle


def lock_outs(proj: Path) -> dict[str, str]:
    """The hash in dvc.lock of every data output (data/...), by path; reports/ hold timings."""
    stages = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    outs = [o for s in stages.values() for o in s.get("outs", []) if o["path"].startswith("data/")]
    return {o["path"]: o["md5"] for o in outs}


def has_file(folder: Path, pattern: str) -> bool:
    return folder.is_dir() and any(folder.rglob(pattern))


@pytest.mark.slow
@needs_kaggle
def test_a_killed_shard_or_render_stage_is_rebuilt_to_the_same_hashes(tmp_path):
    data = tmp_path / "competition"
    write_kaggle_folder(data, SCALE, seed=1, workers=2, progress=False)
    proj = clone_project(tmp_path / "repo")
    subprocess.run(
        [sys.executable, "-m", "doodle.routes", "link", str(data)], cwd=proj, env=subprocess_env(), check=True
    )
    spill = tmp_path / "spill"  # outside the project, as the notebook route puts it
    params = {
        "data": {"source": "data/raw", "kind": "kaggle"},
        "shard": {"count": 6, "spill_dir": str(spill), "memory_mb": 4},
        "render": {"size": 20, "line_width": 6},
    }
    write_params(proj / "params.yaml", params)
    run_dvc(["repro", "render"], proj)
    reference = lock_outs(proj)
    assert {"data/shards", "data/cache"} <= set(reference)

    shards, cache = proj / "data" / "shards", proj / "data" / "cache"
    kill_points = {
        "shard, pass 1 (spilling)": (["repro", "-f", "--single-item", "shard"], lambda: has_file(spill, "*.arrow")),
        "shard, pass 2 (writing shards)": (
            ["repro", "-f", "--single-item", "shard"],
            lambda: has_file(shards, "shard-*.parquet") and not (shards / "manifest.json").exists(),
        ),
        "render (writing the cache)": (
            ["repro", "-f", "--single-item", "render"],
            lambda: has_file(cache, "*.npy") and not (cache / "manifest.json").exists(),
        ),
    }
    for point, (args, ready) in kill_points.items():
        kill_when(proj, args, ready)
        run_dvc(["repro", "render"], proj)  # what a user does next: a rerun
        assert lock_outs(proj) == reference, f"killed during {point}: the rerun hashed differently"
        assert not spill.exists() or not any(spill.iterdir()), f"killed during {point}: spill files left behind"
