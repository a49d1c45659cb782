"""The pipeline as users run it (`dvc repro`) on the pixel sources: a Digit Recognizer folder
built from the real MNIST digits (with broken rows in its train.csv) to a valid ``ImageId,Label``
submission, then the same project switched to a folder of real numpy_bitmap files, where predict
has nothing to submit and says so, and the rest of the pipeline runs unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from doodle.sources.mnist import DigitFolderWriter, IdxFile
from tests.conftest import BITMAP, MNIST, clone_project, needs_bitmap, needs_mnist, run_dvc, stages_run, write_params

TINY_PIXELS = {
    "render": {"size": 28},
    "train": {"epochs": 1, "steps_per_epoch": 4, "batch_size": 32},
    "evaluate": {"embedding": "pca", "embedding_samples": 200},
}
BROKEN = ["7," + ",".join(["0"] * 700), "x," + ",".join(["0"] * 784), "3," + ",".join(["300"] * 784)]


def mnist_folder(root: Path, train: int, test: int) -> Path:
    """A Digit Recognizer folder of the first MNIST digits, with BROKEN rows in its train.csv."""
    images = next(IdxFile(MNIST / "t10k-images-idx3-ubyte.gz").blocks(train + test))
    labels = next(IdxFile(MNIST / "t10k-labels-idx1-ubyte.gz").blocks(train + test))
    writer = DigitFolderWriter(root, train, 784)
    writer.add(images, labels)
    writer.close()
    with (root / "train.csv").open("a") as fh:
        fh.write("\n".join(BROKEN) + "\n")
    return root


@pytest.mark.slow
@needs_mnist
@needs_bitmap
def test_dvc_repro_on_digits_then_on_numpy_bitmaps(tmp_path):
    proj = clone_project(tmp_path / "repo")
    mnist_folder(proj / "data" / "digits", train=600, test=120)
    learns = {"train": {**TINY_PIXELS["train"], "epochs": 15, "steps_per_epoch": None}}  # 15 passes, ~400 digits
    write_params(proj / "params.yaml", {**TINY_PIXELS, **learns, "data": {"source": "data/digits"}})
    out = run_dvc(["repro"], proj)
    assert {"shard", "render", "train@main", "predict", "evaluate"} <= set(stages_run(out))
    with (proj / "submissions" / "submission.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ImageId", "Label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(1, 121)]
    assert {r[1] for r in rows[1:]} <= {str(d) for d in range(10)}
    shard = json.loads((proj / "reports" / "shard.json").read_text())
    stats = json.loads((proj / "data" / "shards" / "stats.json").read_text())
    assert shard["rows_out"] == 600 and shard["rejected_total"] == 3
    assert {r: c for r, c in stats["rejected"].items() if c} == {
        "wrong_column_count": 1,
        "bad_label": 1,
        "pixel_out_of_range": 1,
    }
    test = json.loads((proj / "metrics" / "test.json").read_text())
    assert set(test) == {"test_accuracy", "test_map_at_3"}
    assert test["test_accuracy"] >= 0.5, test  # real digits, chance 0.1: it learned, and the labels line up
    assert json.loads((proj / "reports" / "test.json").read_text())["test_rows"] == 120

    # the same project on a folder of numpy_bitmap files: no test set, nothing to submit
    (proj / "data" / "bitmap").mkdir()
    for path in sorted(BITMAP.glob("*.npy")):
        np.save(proj / "data" / "bitmap" / path.name, np.load(path, mmap_mode="r")[:150])
    write_params(proj / "params.yaml", {**TINY_PIXELS, "data": {"source": "data/bitmap"}})
    out = run_dvc(["repro"], proj)
    assert {"shard", "render", "train@main", "predict", "evaluate"} <= set(stages_run(out))
    assert "data/bitmap has no test set (numpy_bitmap); nothing to submit" in out
    assert not (proj / "submissions" / "submission.csv").exists()
    assert not (proj / "submissions" / "probabilities.parquet").exists()
    assert (proj / "submissions" / ".gitkeep").exists()  # the folder is an output, git's file stays
    assert json.loads((proj / "metrics" / "test.json").read_text()) == {}
    classes = json.loads((proj / "models" / "main" / "model.json").read_text())["classes"]
    assert classes == ["apple", "bicycle", "cat", "diamond", "eye", "fish"]
    assert set(json.loads((proj / "metrics" / "eval.json").read_text())) == {"val_map_at_3", "val_top1", "val_top3"}
    assert stages_run(run_dvc(["repro"], proj)) == []  # nothing missing, nothing changed
