"""Training, prediction and evaluation on generated data, the stages called in-process."""

import json
from pathlib import Path

import pytest

from tests.conftest import LEARNED_FLOOR, LEARNS, work_on_copy


def test_render_stage_outputs(rendered):
    man = json.loads((rendered / "data/cache/manifest.json").read_text())
    assert man["render"]["size"] == 32 and {f["split"] for f in man["files"]} == {"train", "val"}
    assert (rendered / "reports/render_samples.png").stat().st_size > 1000
    # timings go to reports/, so the cache's bytes depend only on the shards and params
    assert "seconds" not in man and json.loads((rendered / "reports/render.json").read_text())["rows"] == man["rows"]
    assert not (rendered / "metrics/render.json").exists()  # no headline number: not a DVC metric


@pytest.mark.slow
def test_train_predict_evaluate_tiny(rendered, tmp_path, monkeypatch, capsys):
    work_on_copy(rendered, tmp_path / "p", monkeypatch, LEARNS)
    from stages import evaluate, predict, train

    train.main(["--quiet"])
    meta = json.loads(Path("models/main/model.json").read_text())
    assert meta["render"]["size"] == 32 and len(meta["classes"]) == 4
    epochs = len(meta["history"]["loss"])
    assert json.loads(Path("dvclive/main/metrics.json").read_text())["step"] == epochs - 1
    assert meta["metrics"]["val_map_at_3"] >= LEARNED_FLOOR, meta["history"]["val_map_at_3"]
    predict.main(["--quiet"])
    rows = Path("submissions/submission.csv").read_text().splitlines()
    assert rows[0] == "key_id,word" and len(rows) == 4 * 6 + 1
    test = json.loads(Path("reports/test.json").read_text())
    assert set(json.loads(Path("metrics/test.json").read_text())) == {"test_map_at_3"}
    assert 0 <= test["test_map_at_3"] <= 1 and test["test_rows"] == 24
    evaluate.main(["--quiet"])
    ev = json.loads(Path("metrics/eval.json").read_text())
    assert set(ev) == {"val_map_at_3", "val_top1", "val_top3"}  # headline only; the rest is in reports/
    assert ev["val_map_at_3"] == pytest.approx(meta["metrics"]["val_map_at_3"], abs=1e-4)  # the same model, split
    for f in ["confusion.csv", "per_class_accuracy.csv", "confidence.png", "misclassified.png"]:
        assert (Path("reports") / f).exists()


def test_batchnorm_model_is_recalibrated_each_epoch(rendered, tmp_path, monkeypatch, capsys):
    """seed_cnn has BatchNorm: the train stage recomputes its statistics after every epoch
    (timed in reports/train/main.json); the cnn above has none and spends nothing on it."""
    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": {"model": "seed_cnn", "bn_recalibration_batches": 2}})
    from doodle.train import batchnorm
    from stages import train

    real, calls = batchnorm.recalibrate, []

    def counted(model, batches):
        batches = list(batches)
        calls.append(sum(len(b) for b in batches))
        return real(model, batches)

    monkeypatch.setattr(batchnorm, "recalibrate", counted)
    train.main(["--quiet"])
    metrics = json.loads(Path("reports/train/main.json").read_text())
    assert metrics["bn_recalibration_seconds"] > 0 and metrics["epochs_run"] == 2
    assert len(calls) == 2 and all(rows > 0 for rows in calls), calls  # once after each epoch, on images
    assert "bn_recalibration_seconds" not in json.loads(Path("models/main/model.json").read_text())["metrics"]


def test_training_on_the_fly_from_the_shards_with_stroke_augmentation(rendered, tmp_path, monkeypatch):
    """render.train_cache: false: the render stage caches only the validation shards, and train
    draws its batches from the parquet shards, here with every stroke augmentation on, in two
    processes (train.input_processes; through tf.data)."""
    augment = {"scale": 0.1, "aspect": 0.1, "shift": 0.05, "rotation": 10.0, "shear": 0.1, "stroke_dropout": 0.1}
    train = {"stroke_augment": augment, "input_processes": 2}
    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"render": {"train_cache": False}, "train": train})
    import shutil as sh

    from stages import render, train

    sh.rmtree("data/cache")
    render.main(["--quiet"])
    man = json.loads(Path("data/cache/manifest.json").read_text())
    assert {f["split"] for f in man["files"]} == {"val"}
    train.main(["--quiet"])
    meta = json.loads(Path("models/main/model.json").read_text())
    assert meta["metrics"]["epochs_run"] == 2 and meta["render"] == man["render"]


def test_each_epoch_validates_on_val_rows_and_the_end_on_the_whole_split(rendered, tmp_path, monkeypatch):
    """train.val_rows bounds the per-epoch validation (a fixed prefix of the split); the reported
    figures come from one pass over the whole split, which also writes the out-of-fold rows."""
    import pyarrow.parquet as pq

    from doodle.batches.cache import open_split
    from doodle.train.feed import validation_stream
    from doodle.train.trainer import val_steps

    assert val_steps(None, 1000, 128) == 8 and val_steps(20_000, 10**6, 128) == 157 and val_steps(16, 100, 32) == 1
    assert val_steps(20_000, 300, 128) == 3  # never past the split's end (a stream would go round again)
    val = open_split(rendered / "data" / "cache", "val")
    full = len(validation_stream(val, 8, None))
    assert len(validation_stream(val, 8, val_steps(16, val.rows, 8))) == 2 < full
    assert len(validation_stream(val, 8, val_steps(10**6, val.rows, 8))) == full
    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": {"val_rows": 16}})
    from stages import train

    train.main(["--quiet"])
    report = json.loads(Path("reports/train/main.json").read_text())
    assert report["val_rows"] == val.rows > 16 and report["final_val_seconds"] >= 0
    oof = pq.read_table("models/main/members/oof.parquet")
    assert oof.num_rows == val.rows and oof["label"].to_pylist() == val.all_labels().tolist()


def test_stroke_augmentation_needs_the_on_the_fly_input(rendered, tmp_path, monkeypatch):
    from doodle.core.params import ParamError

    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": {"stroke_augment": {"rotation": 10.0}}})
    from stages import train

    with pytest.raises(ParamError, match="train.stroke_augment.*render.train_cache: false"):
        train.main(["--quiet"])


def test_check_run_refuses_params_that_conflict_with_the_data_before_any_work():
    """ensemble.check_run, which the train stage calls before any device, model or file work: each
    cross-section conflict is one ParamError naming the param and the fix."""
    from doodle.core.params import ParamError
    from doodle.render.params import RenderSection
    from doodle.train.ensemble import check_run
    from doodle.train.params import TrainParams
    from doodle.train.strategy import Worker

    render = RenderSection(train_cache=False)
    cache = {"render": render.raster().to_dict(), "files": [], "classes": ["a", "b"]}
    strokes = {"content": "strokes", "count": 4, "val_shards": [0], "train_shards": [1, 2, 3]}
    check_run(TrainParams(), render, cache, strokes, Worker(), Path("data/cache"))  # consistent: nothing raised

    with pytest.raises(ParamError, match="time_budget_s: not supported with train.strategy multi_worker"):
        check_run(TrainParams(time_budget_s=60), render, cache, strokes, Worker(0, 2), Path("data/cache"))
    check_run(TrainParams(input_processes=2), render, cache, strokes, Worker(0, 2), Path("data/cache"))  # each its own
    with pytest.raises(ParamError, match="input_processes: makes batches drawn on the fly"):
        check_run(TrainParams(input_processes=2), RenderSection(), cache, strokes, Worker(), Path("data/cache"))
    with pytest.raises(ParamError, match="render params .* differ from the render params .*rerun `dvc repro`"):
        check_run(
            TrainParams(),
            RenderSection(train_cache=False, line_width=8.0),
            cache,
            strokes,
            Worker(),
            Path("data/cache"),
        )
    images = {**strokes, "content": "images", "source_kind": "digits"}
    with pytest.raises(ParamError, match="set render.train_cache: true"):
        check_run(TrainParams(), render, cache, images, Worker(), Path("data/cache"))
    # a model drawing its own images (train.render) needs strokes; the same params as the cache's are no own
    cached = RenderSection()
    check_run(TrainParams(render={"size": 24}), cached, cache, strokes, Worker(), Path("data/cache"))
    check_run(TrainParams(render={"size": cached.size}), cached, cache, images, Worker(), Path("data/cache"))
    with pytest.raises(ParamError, match=r"train.render: a model's own drawing params .* shards hold images"):
        check_run(TrainParams(render={"size": 24}), cached, cache, images, Worker(), Path("data/cache"))
