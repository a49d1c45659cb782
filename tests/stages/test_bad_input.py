"""Bad input as a new user makes it: one clear line and exit status 2 for what cannot be used,
a counted quarantine entry for a broken row, never a traceback and never a silent loss."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from doodle.core.params import ParamError, from_mapping, read_params
from doodle.core.quiet_tensorflow import filter_notices
from doodle.drawing.raster import RenderParams
from doodle.predict.inference import TrainedModel, predict_test_file
from doodle.predict.run import PredictParams
from doodle.sources.folder import SourceError
from tests.conftest import row, subprocess_env, write_csv, write_params


def run_stage(stage: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """``python -m stages.STAGE --quiet`` in ``cwd``. The tests run the shard stage, which never imports
    TensorFlow (nor Keras or JAX), so its stderr is exactly what the stage prints and is asserted whole."""
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--quiet"],
        cwd=cwd,
        env={**subprocess_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def kaggle_folder(root: Path, words=("cat", "dog", "eye")) -> Path:
    for i, w in enumerate(words):
        write_csv(root / "train_simplified" / f"{w}.csv", [row(100 * i + k, word=w) for k in range(1, 30)])
    (root / "test_simplified.csv").write_text('key_id,countrycode,drawing\n1,US,"[[[1],[2]]]"\n')
    return root


def shard_project(tmp_path: Path, break_file) -> tuple[Path, Path]:
    src = kaggle_folder(tmp_path / "src")
    break_file(src / "train_simplified" / "dog.csv")
    proj = tmp_path / "proj"
    proj.mkdir()
    write_params(proj / "params.yaml", {"data": {"source": str(src)}, "shard": {"count": 2, "workers": 2}})
    return proj, src / "train_simplified" / "dog.csv"


def missing_column(path: Path) -> None:
    write_csv(path, [["US", "[[[1],[2]]]", 1]], header=["countrycode", "drawing", "key_id"])


def binary_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 40)


@pytest.mark.parametrize(
    "break_file,expected",
    [(missing_column, "missing required column"), (binary_bytes, "not a CSV text file")],
)
def test_unusable_class_file_is_one_line_naming_it(tmp_path, break_file, expected):
    """The file is read inside a worker process: its traceback stays there unless asked for."""
    proj, bad = shard_project(tmp_path, break_file)
    r = run_stage("shard", proj)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0] and expected in lines[0], lines
    debug = run_stage("shard", proj, DOODLE_DEBUG="1")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "in the worker process" in debug.stderr


def test_truncated_last_row_is_quarantined_and_the_rest_kept(tmp_path):
    src = kaggle_folder(tmp_path / "src")
    dog = src / "train_simplified" / "dog.csv"
    text = dog.read_text()
    dog.write_text(text + 'US,"[[[1,2],[3')  # the file ends in the middle of a row
    proj = tmp_path / "proj"
    proj.mkdir()
    write_params(proj / "params.yaml", {"data": {"source": str(src)}, "shard": {"count": 2, "workers": 1}})
    r = run_stage("shard", proj)
    assert r.returncode == 0, r.stderr
    stats = json.loads((proj / "data/shards/stats.json").read_text())
    assert stats["rejected"]["malformed_csv_row"] == 1 and stats["rejected_total"] == 1
    assert stats["rows_in"] == 3 * 29 + 1 and stats["rows_out"] == 3 * 29
    assert stats["rows_per_class"]["dog"] == 29
    with (proj / "data/shards/quarantine.csv").open(newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(q["word"], q["reason"], q["drawing"]) for q in rejects] == [("dog", "malformed_csv_row", 'US,"[[[1,2],[3')]


def test_row_with_too_few_columns_mid_file_is_quarantined(tmp_path):
    src = kaggle_folder(tmp_path / "src")
    cat = src / "train_simplified" / "cat.csv"
    lines = cat.read_text().splitlines(keepends=True)
    cat.write_text("".join([*lines[:5], 'US,"[[[1,2],[3,4]]]"\n', *lines[5:]]))
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    stats = write_shards(resolve_source(src), tmp_path / "out", ShardParams(count=2, workers=1), progress=False)
    assert stats["rejected"]["malformed_csv_row"] == 1 and stats["rows_out"] == 3 * 29


def test_invalid_yaml_names_file_line_and_column(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("shard:\n  count: 8\n  seed: [1, 2\ntrain:\n  epochs: 3\n")
    with pytest.raises(ParamError) as err:
        read_params(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:") and "not valid YAML" in msg
    line, col = msg.split(":")[1:3]
    assert line.isdigit() and col.isdigit()
    r = run_stage("shard", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [f"error: params.yaml{msg[len(str(p)) :]}"]


@pytest.mark.parametrize(
    "value,expected", [(True, "on"), (False, "off"), ("on", "on"), ("OFF", "off"), ("auto", "auto")]
)
def test_predict_balance_accepts_yaml_booleans(value, expected):
    assert from_mapping(PredictParams, {"balance": value}, "predict").balance == expected


def test_predict_balance_yaml_on_off(tmp_path):
    """YAML 1.1 reads a bare on/off as true/false: both spellings work from params.yaml."""
    (tmp_path / "params.yaml").write_text("predict:\n  balance: off\n")
    cfg = from_mapping(PredictParams, read_params(tmp_path / "params.yaml")["predict"], "predict")
    assert cfg.balance == "off"
    with pytest.raises(ParamError, match="predict.balance"):
        from_mapping(PredictParams, {"balance": "sometimes"}, "predict")


def test_ensemble_member_outside_models_folder_is_named():
    with pytest.raises(ParamError, match="predict.models.*elsewhere/m.keras"):
        from_mapping(PredictParams, {"models": ["models/main/model.keras", "elsewhere/m.keras"]}, "predict")


class _Uniform:
    """A stand-in for a Keras model: uniform probabilities over 3 classes."""

    output_shape = (None, 3)

    def __call__(self, images, training=False):
        return np.full((len(images), 3), 1 / 3, np.float32)


def fake_model() -> TrainedModel:
    return TrainedModel(Path("models/fake.keras"), _Uniform(), ["a", "b", "c"], RenderParams(16))


def test_repeated_test_key_ids_fail_naming_them(tmp_path):
    test = tmp_path / "test_simplified.csv"
    test.write_text('key_id,countrycode,drawing\n7,US,"[[[1],[2]]]"\n8,US,"[[[1],[2]]]"\n7,DE,"[[[3],[4]]]"\n')
    with pytest.raises(SourceError, match=r"1 key_id\(s\) appear more than once \(e.g. 7\)"):
        predict_test_file([fake_model()], test, 8, False)


def test_broken_test_rows_still_get_a_row(tmp_path):
    test = tmp_path / "test_simplified.csv"
    test.write_text('key_id,countrycode,drawing\n1,US,"[[[1],[2]]]"\n2,US,"[[[01],[2]]]"\n3,US\n4,US,"[[[1],[2')
    result = predict_test_file([fake_model()], test, 8, False)
    assert result.key_ids == ["1", "2", "4", "3"] and result.probs.shape == (4, 3)
    assert result.rejected == {"malformed_json": 2, "malformed_csv_row": 1}


def test_stage_errors_are_one_line_without_traceback(tmp_path):
    """A missing data folder and a bad param value, through the stage's command line."""
    write_params(tmp_path / "params.yaml", {"data": {"source": "no/such/folder"}})
    r = run_stage("shard", tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no/such/folder" in r.stderr
    write_params(tmp_path / "params.yaml", {"shard": {"count": 0}})
    r = run_stage("shard", tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: param shard.count: must be >= 1, got 0"
    assert not os.path.exists(tmp_path / "data/shards")


def test_no_tensorflow_start_up_lines(tmp_path):
    """A stage that imports TensorFlow prints none of its C++ start-up notices (CPU features,
    oneDNN), also when the user's environment does not set TF_CPP_MIN_LOG_LEVEL. Which notices
    appear depends on the CPU (AVX-512 ones print them; tests/core/test_quiet_tensorflow.py checks the
    filter with a stand-in that prints them everywhere), so this asserts that none of those the
    filter drops is left, not that stderr is empty."""
    env = {k: v for k, v in subprocess_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run(
        [sys.executable, "-c", "import stages.score, keras; keras.ops.ones(2); print('ok')"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and r.stdout.strip() == b"ok", err
    assert filter_notices(r.stderr) == r.stderr, err  # no line the start-up filter drops
    # nor a part of one in another form (the CPU-feature notice's second line, an INFO line of another file)
    for part in ("InitializeLog", "oneDNN", "cpu_feature_guard", "To enable the following instructions"):
        assert part not in err, err
