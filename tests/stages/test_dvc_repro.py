"""The pipeline as users run it, through DVC: what `dvc repro` reruns, and what a bad param costs."""

import subprocess
import sys

import pytest

from stages.cli import subprocess_env
from tests.conftest import copy_project, run_dvc, stages_run, write_params


@pytest.mark.slow
def test_dvc_repro_reruns_only_what_changed_and_a_bad_param_loses_nothing(reproduced, tmp_path):
    """The pipeline as users run it: repro, no-op rerun, a render param change reruns render onwards;
    then a mistyped param in any section stops `dvc repro` at the check stage with one line, before
    DVC deletes any stage's outputs: the trained model and every metric stay byte-identical."""
    built, first = reproduced
    assert first == ["check", "sample", "shard", "render", "train@main", "predict", "baseline", "evaluate"]
    proj = copy_project(built, tmp_path / "repo")
    assert stages_run(run_dvc(["repro"], proj)) == []
    write_params(proj / "params.yaml", {"render": {"line_width": 8}})
    assert stages_run(run_dvc(["repro"], proj)) == ["check", "render", "train@main", "predict", "baseline", "evaluate"]
    metrics = run_dvc(["metrics", "show"], proj)
    assert "val_map_at_3" in metrics and "test_map_at_3" in metrics

    kept = [
        "models/main/model.keras",
        "models/main/model.json",
        "metrics/train/main.json",
        "metrics/eval.json",
        "metrics/test.json",
    ]
    kept += ["submissions/submission.csv", "reports/train/main_curves.png", "data/cache/manifest.json"]
    before = {f: (proj / f).read_bytes() for f in kept}
    for bad, named in [
        ({"train": {"batch_size": -5}}, "param train: batch_size and epochs must be >= 1"),
        ({"train": {"model": "resnet50"}}, "param train.model: unknown model 'resnet50'"),
        ({"render": {"sizee": 64}}, "sizee"),
        ({"evaluate": {"embedding": "umap"}}, "param evaluate.embedding"),
    ]:
        write_params(proj / "params.yaml", {"render": {"line_width": 8}, **merge_into(bad)})
        r = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"], cwd=proj, env=subprocess_env(), capture_output=True, text=True
        )
        assert r.returncode != 0 and named in r.stderr, r.stdout + r.stderr
        assert stages_run(r.stdout) == ["check"]
        assert {f: (proj / f).read_bytes() for f in kept} == before, f"outputs changed after {bad}"


def merge_into(bad: dict) -> dict:
    """``bad`` on top of the render change the test made before (write_params merges one level)."""
    return {k: ({"line_width": 8, **v} if k == "render" else v) for k, v in bad.items()}
