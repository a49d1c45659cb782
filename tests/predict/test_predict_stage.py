"""The predict stage as users run it: ``predict.balance: auto`` with ``predict.tta_flip: true`` on the
tiny sample (what the report says, a valid submission, and what each option does to the
probabilities), the real 340-class test file of ``../shared/data/quickdraw-kaggle``, and the error
paths, each one line naming what is wrong (``error: ...``, exit status 2, no traceback)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.cli import subprocess_env
from tests.conftest import KAGGLE, needs_kaggle, rendered_in, work_on_copy, write_params

CLASSES = ["circle", "line", "square", "star"]  # tests/conftest.py TINY's

# What TensorFlow may print at start-up on some machines, whatever TF_CPP_MIN_LOG_LEVEL says
TF_NOTICES = (
    "cpu_feature_guard",
    "oneDNN",
    "This TensorFlow binary is optimized",
    "absl::InitializeLog",
    "To enable the following instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)


def _train_in(project: Path) -> Path:
    """Run the train stage in ``project`` (TINY's few steps) and come back."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        from stages import train

        train.main(["--quiet"])
    finally:
        os.chdir(cwd)
    return project


@pytest.fixture(scope="module")
def trained(rendered, tmp_path_factory):
    """The ``rendered`` project with models/main/model.keras trained (TINY: 2 epochs of 3 steps): only
    copied by the tests, never changed."""
    project = tmp_path_factory.mktemp("trained") / "p"
    shutil.copytree(rendered, project)
    return _train_in(project)


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory):
    """A project on the embedded Digit Recognizer sample (``sample.kind: digits``), trained a few steps."""
    project = tmp_path_factory.mktemp("digits")
    sample_params = {"kind": "digits", "classes": None, "train_per_class": 20, "test_per_class": 3}
    write_params(project / "params.yaml", {"sample": sample_params, "train": {"epochs": 1, "steps_per_epoch": 2}})
    return _train_in(rendered_in(project))


# --------------------------------------------------------------------------- helpers
def key_ids_of(test_file: Path) -> list[str]:
    with test_file.open(newline="") as fh:
        return [r["key_id"] for r in csv.DictReader(fh)]


def check_submission(path: Path, test_file: Path, classes: list[str]) -> dict[str, list[str]]:
    """Assert ``path`` is a submission Kaggle accepts for ``test_file``: header ``key_id,word``, one
    row per test key_id (each once, in the test file's order), three distinct labels a row, each a
    known class with its spaces written as '_'. Returns key_id -> the three labels."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["key_id", "word"], rows[0]
    keys = key_ids_of(test_file)
    assert [r[0] for r in rows[1:]] == keys and len(set(keys)) == len(keys)
    known = {c.replace(" ", "_") for c in classes}
    labels = {}
    for key, word in rows[1:]:
        guess = word.split(" ")
        assert len(guess) == 3 and len(set(guess)) == 3 and set(guess) <= known, (key, word)
        labels[key] = guess
    return labels


def saved_probs(classes: list[str]) -> tuple[list[str], np.ndarray]:
    """(key_ids, probabilities) from submissions/probabilities.parquet, which keeps every class's
    probability when there are no more classes than ``predict.top_k_saved`` (10 by default)."""
    table = pq.read_table("submissions/probabilities.parquet").to_pydict()
    index = {c.replace(" ", "_"): i for i, c in enumerate(classes)}
    k = sum(name.startswith("label_") for name in table)
    assert k == len(classes), "every class's probability is saved"
    probs = np.zeros((len(table["key_id"]), len(classes)), np.float32)
    for j in range(1, k + 1):
        cols = [index[label] for label in table[f"label_{j}"]]
        probs[np.arange(len(cols)), cols] = table[f"prob_{j}"]
    return table["key_id"], probs


def run_predict(project: Path, capsys) -> tuple[dict, str, dict[str, list[str]], np.ndarray]:
    """The predict stage in ``project`` (the working directory): (reports/test.json, its printed
    line, the checked submission, the saved probabilities in test-file order)."""
    from stages import predict

    capsys.readouterr()
    predict.main(["--quiet"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads((project / "reports/test.json").read_text())
    test_file = project / "data/sample/test_simplified.csv"
    submission = check_submission(project / "submissions/submission.csv", test_file, CLASSES)
    keys, probs = saved_probs(CLASSES)
    assert keys == key_ids_of(test_file)
    # the submission is the saved probabilities' top 3, best first
    top3 = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    assert [submission[k][0] for k in keys] == [CLASSES[i] for i in top3[:, 0]]
    return report, line, submission, probs


def stage_error(stage: str, project: Path) -> str:
    """Run ``python -m stages.<stage>`` in ``project``; assert it failed as a user error: exit
    status 2, no traceback, and, TensorFlow's start-up notices and the stage's log lines aside,
    exactly one line, ``error: ...``. Returns that line."""
    r = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--quiet"],
        cwd=project,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not any(n in ln for n in TF_NOTICES)]
    said = [ln for ln in lines if not ln.startswith(("INFO ", "WARNING "))]  # logging's lines (stages.cli)
    assert len(said) == 1 and said[0].startswith("error: "), r.stderr
    return said[0]


def set_models(project: Path, overrides: dict, models: list[str]) -> None:
    write_params(project / "params.yaml", {**overrides, "predict": {"models": models}})


# --------------------------------------------------------------------------- balance and TTA in a stage run
def test_balance_auto_and_tta_flip_in_a_stage_run(trained, tmp_path, monkeypatch, capsys):
    """balance: auto and tta_flip: true: the report and the printed line say what was done, the
    submission is valid, and each option changes the probabilities as it should: TTA is the mean of
    the model's probabilities of the test images and of their mirror images; auto balancing is off
    for 6 drawings a class and on for 20 (Kaggle's test set has ~330), and then rescales the
    unbalanced probabilities (submission.balance), evening out the top-1 counts."""
    from doodle.drawing.parse import parse_drawings
    from doodle.predict.inference import TrainedModel
    from doodle.predict.submission import balance
    from stages import sample

    both = {"balance": "auto", "tta_flip": True}
    project = work_on_copy(trained, tmp_path / "p", monkeypatch, {"predict": both})
    report, line, _, tta_probs = run_predict(project, capsys)
    assert report["test_rows"] == 24 and report["tta_flip"] is True and report["models"] == 1
    assert report["balanced"] is False  # 6 a class: under auto's 20 a class
    assert "(valid; balanced=False, tta=True, 1 model(s))" in line
    assert set(json.loads(Path("metrics/test.json").read_text())) == {"test_map_at_3"}
    np.testing.assert_allclose(tta_probs.sum(axis=1), 1, atol=1e-4)

    # TTA: the mean over each test image and its mirror image, which the model scores differently
    model = TrainedModel.load("models/main/model.keras")
    with Path("data/sample/test_simplified.csv").open(newline="") as fh:
        parsed = parse_drawings([r["drawing"] for r in csv.DictReader(fh)])
    assert parsed.valid.all()
    images = model.encoder.encode(parsed.strokes.expand(parsed.valid))
    assert images.ndim == 4 and images.shape[1:3] == (32, 32)  # (n, height, width, channels)
    plain = np.asarray(model.model(images, training=False))
    mirror = np.asarray(model.model(np.ascontiguousarray(images[:, :, ::-1]), training=False))
    assert np.abs(plain - mirror).max() > 1e-3  # the flip is seen: not a symmetric no-op
    np.testing.assert_allclose(tta_probs, (plain + mirror) / 2, atol=1e-5)
    write_params(project / "params.yaml", {"predict": {"balance": "auto", "tta_flip": False}})
    report, line, _, plain_probs = run_predict(project, capsys)
    assert report["tta_flip"] is False and "tta=False" in line
    np.testing.assert_allclose(plain_probs, plain, atol=1e-5)
    assert np.abs(plain_probs - tta_probs).max() > 1e-4

    # auto balancing: on once the test set has 20 drawings a class (a bigger sample test set)
    write_params(project / "params.yaml", {"sample": {"test_per_class": 20}, "predict": both})
    sample.main(["--quiet"])
    report, line, balanced_sub, balanced = run_predict(project, capsys)
    assert report["test_rows"] == 80 and report["balanced"] is True and report["tta_flip"] is True
    assert "(valid; balanced=True, tta=True, 1 model(s))" in line
    write_params(project / "params.yaml", {"sample": {"test_per_class": 20}, "predict": {**both, "balance": "off"}})
    report, line, unbalanced_sub, unbalanced = run_predict(project, capsys)
    assert report["balanced"] is False and "balanced=False, tta=True" in line
    np.testing.assert_allclose(balanced, balance(unbalanced), atol=1e-5)

    def unevenness(sub: dict[str, list[str]]) -> int:  # the largest top-1 count's distance from 20
        counts = [sum(guess[0] == c for guess in sub.values()) for c in CLASSES]
        return max(abs(n - 20) for n in counts)

    assert unevenness(balanced_sub) <= unevenness(unbalanced_sub)


# --------------------------------------------------------------------------- Kaggle's 340 classes
@pytest.mark.slow
@needs_kaggle
def test_predict_on_the_kaggle_folders_340_class_test_file(tmp_path, monkeypatch, capsys):
    """data.source: the shared Kaggle folder (an absolute path outside the project), 20 drawings a
    class sharded, two training steps; predict (balance auto, tta_flip) writes a submission Kaggle
    accepts for its 1,700-row test file: one row per test key_id, three distinct words of the 340,
    spaces written as '_', and scores it against test_labels.csv."""
    classes = sorted(p.stem for p in (KAGGLE / "train_simplified").glob("*.csv"))
    assert len(classes) == 340 and any(" " in c for c in classes)
    test_file = KAGGLE / "test_simplified.csv"
    project = tmp_path / "p"
    project.mkdir()
    write_params(
        project / "params.yaml",
        {
            "data": {"source": str(KAGGLE), "kind": "kaggle"},
            "shard": {"count": 3, "max_per_class": 20},
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 32},
            "predict": {"balance": "auto", "tta_flip": True},
        },
    )
    monkeypatch.chdir(project)
    from stages import predict, render, shard, train

    shard.main(["--quiet"])
    render.main(["--quiet"])
    train.main(["--quiet"])
    assert json.loads(Path("models/main/model.json").read_text())["classes"] == classes
    capsys.readouterr()
    predict.main(["--quiet"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    submission = check_submission(Path("submissions/submission.csv"), test_file, classes)
    assert len(submission) == 1700
    report = json.loads(Path("reports/test.json").read_text())
    assert report["test_rows"] == 1700 and report["tta_flip"] is True
    assert report["balanced"] is False  # 5 drawings a class: under auto's 20
    assert 0 <= report["test_map_at_3"] <= 1
    assert "1,700 rows -> submissions/submission.csv (valid; balanced=False, tta=True" in line
    saved = pq.read_table("submissions/probabilities.parquet", columns=["key_id", "label_1"]).to_pydict()
    assert saved["key_id"] == list(submission) and saved["label_1"] == [g[0] for g in submission.values()]


# --------------------------------------------------------------------------- error paths: one line each
def test_models_trained_on_other_classes_are_one_line(trained, tmp_path, monkeypatch):
    """predict.models lists two models whose class lists differ: refused, naming both, before any
    prediction (no submission written)."""
    project = work_on_copy(trained, tmp_path / "p", monkeypatch)
    shutil.copy("models/main/model.keras", "models/other.keras")
    meta = json.loads(Path("models/main/model.json").read_text())
    Path("models/other.json").write_text(json.dumps({**meta, "classes": ["circle", "line", "square", "triangle"]}))
    set_models(project, {}, ["models/main/model.keras", "models/other.keras"])
    line = stage_error("predict", project)
    assert line == "error: predict.models: models/other.keras was trained on other classes than models/main/model.keras"
    assert not Path("submissions/submission.csv").exists()


def test_a_source_without_its_test_file_is_one_line(rendered, tmp_path):
    """data.source is a Kaggle folder without test_simplified.csv: one line naming the missing file
    (before any model is loaded: none is trained here)."""
    source = tmp_path / "no-test"
    shutil.copytree(rendered / "data/sample/train_simplified", source / "train_simplified")
    project = tmp_path / "p"
    project.mkdir()
    write_params(project / "params.yaml", {"data": {"source": str(source), "kind": "kaggle"}})
    line = stage_error("predict", project)
    assert line == f"error: {source}/test_simplified.csv not found: predict needs Kaggle's test file"


@pytest.mark.slow
def test_a_digit_model_on_doodles_and_a_doodle_model_on_digits_are_one_line(trained, digits_project, tmp_path):
    """A model trained on the Digit Recognizer sample cannot label Quick Draw drawings (its words
    '0'..'9' would make a well-formed, meaningless submission), nor a doodle model digits: each is
    one line naming the model, its classes and the source, and no submission is written."""
    doodles = tmp_path / "doodles"
    shutil.copytree(trained, doodles)
    for suffix in (".keras", ".json"):
        shutil.copy(digits_project / f"models/main/model{suffix}", doodles / f"models/digits{suffix}")
    set_models(doodles, {}, ["models/digits.keras"])
    line = stage_error("predict", doodles)
    assert line.startswith("error: predict.models: models/digits.keras was trained on classes '0', '1', '2', '3', '4'")
    assert "none of them is among the 4 classes of data/sample ('circle', 'line', 'square', ...)" in line
    assert line.endswith("rerun train on this data.source")
    assert not (doodles / "submissions/submission.csv").exists()

    digits = tmp_path / "digits"
    shutil.copytree(digits_project, digits)
    for suffix in (".keras", ".json"):
        shutil.copy(trained / f"models/main/model{suffix}", digits / f"models/doodles{suffix}")
    set_models(digits, {"sample": {"kind": "digits", "classes": None}}, ["models/doodles.keras"])
    line = stage_error("predict", digits)
    assert line == (
        "error: predict.models: models/doodles.keras was trained on classes 'circle', 'line', 'square', 'star', "
        "not the digits 0-9 of data/sample: rerun train on this data.source"
    )
    assert not (digits / "submissions/submission.csv").exists()
