"""A queued DVC sweep, as users run one: two learning rates queued with ``dvc exp run --queue``, run
with ``--run-all``, and read back from ``dvc exp show --json`` with their params and metrics."""

import json
import shutil

import pytest

from tests.conftest import copy_project, run_dvc


def experiments(show: list) -> dict:
    """``{name: (params.yaml data, {metrics file: data})}`` of every experiment in ``dvc exp show --json``."""
    found = {}
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = {path: m.get("data", {}) for path, m in data.get("metrics", {}).items()}
                found[rev.get("name") or exp.get("name")] = (params, metrics)
    return found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="DVC experiments need git")
def test_queued_two_point_sweep_reads_back_both_results(reproduced, tmp_path):
    # from a reproduced, committed project: each point reruns only what the learning rate changes
    proj = copy_project(reproduced[0], tmp_path / "repo")

    # a grid of two points; 3e-5 is written by DVC as 3e-05, which YAML 1.1 would read as a string
    grid = ["-S", "train.learning_rate=0.001,3e-5"]
    run_dvc(["exp", "run", "--queue", *grid], proj, timeout=900)
    run_dvc(["exp", "run", "--run-all"], proj, timeout=900)
    runs = experiments(json.loads(run_dvc(["exp", "show", "--json"], proj, timeout=900)))

    assert len(runs) == 2, runs.keys()
    assert sorted(p["train"]["learning_rate"] for p, _ in runs.values()) == [3e-5, 0.001]
    for _, metrics in runs.values():
        val = metrics["metrics/eval.json"]["val_map_at_3"]
        assert 0.0 <= val <= 1.0 and metrics["metrics/train/main.json"]["epochs_run"] == 2
        assert 0.0 <= metrics["metrics/test.json"]["test_map_at_3"] <= 1.0
        assert "val_map_at_3" in metrics["metrics/baseline.json"]
