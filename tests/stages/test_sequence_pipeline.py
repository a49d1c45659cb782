"""Stroke-sequence models through the stages (train, predict, evaluate) with params only, and a blend
of an image CNN with a stroke model fitted on validation (predict.weights: fit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import LEARNED_FLOOR, LEARNS, work_on_copy, write_params


def test_check_run_knows_what_a_stroke_model_reads():
    """A stroke model reads strokes (never pixel shards), needs no cached training images for stroke
    augmentation, and image augmentation does not apply to it."""
    from doodle.core.params import ParamError, from_mapping
    from doodle.render.params import RenderSection
    from doodle.train.ensemble import check_run
    from doodle.train.params import TrainParams
    from doodle.train.strategy import Worker

    render = RenderSection(train_cache=True)
    cache = {"render": render.raster().to_dict(), "files": [], "classes": ["a", "b"]}
    strokes = {"content": "strokes", "count": 4, "val_shards": [0], "train_shards": [1, 2, 3]}
    augmented = TrainParams(model="stroke_rnn", stroke_augment={"rotation": 10.0})
    check_run(
        augmented, render, cache, strokes, Worker(), Path("data/cache")
    )  # the cache's training images are not read
    with pytest.raises(ParamError, match="stroke_augment: needs render.train_cache: false"):
        check_run(
            TrainParams(model="cnn", stroke_augment={"rotation": 10.0}),
            render,
            cache,
            strokes,
            Worker(),
            Path("data/cache"),
        )
    images = {**strokes, "content": "images", "source_kind": "digits"}
    with pytest.raises(ParamError, match="train.model: stroke_rnn reads strokes, but the shards hold images"):
        check_run(TrainParams(model="stroke_rnn"), render, cache, images, Worker(), Path("data/cache"))
    with pytest.raises(ParamError, match="train.augment: image augmentation does not apply"):
        from_mapping(TrainParams, {"model": "stroke_conv1d", "augment": {"flip": True}}, "train")
    with pytest.raises(ParamError, match="train.sequence.max_points"):
        from_mapping(TrainParams, {"model": "stroke_conv1d", "sequence": {"max_points": 2}}, "train")


@pytest.mark.slow
def test_a_stroke_model_trains_predicts_evaluates_and_blends_with_a_cnn(rendered, tmp_path, monkeypatch):
    from stages import evaluate, predict, train

    strokes = {
        "train": {"model": "stroke_conv1d", "width": 0.25, "stroke_augment": {"rotation": 10.0}, **LEARNS["train"]}
    }
    proj = work_on_copy(rendered, tmp_path / "p", monkeypatch, strokes)
    train.main(["--quiet"])
    predict.main(["--quiet"])
    evaluate.main(["--quiet"])
    meta = json.loads((proj / "models" / "main" / "model.json").read_text())
    assert meta["input"] == {"kind": "sequence", "max_points": 128, "time": False, "position": False}
    assert meta["input_shape"] == [128, 3]
    # evaluate reads the validation drawings from the shards, in the cache's order: the same score
    trained = json.loads((proj / "reports" / "train" / "main.json").read_text())["val_map_at_3"]
    assert trained >= LEARNED_FLOOR, meta["history"]["val_map_at_3"]  # it learned the shapes from their strokes
    assert json.loads((proj / "metrics" / "eval.json").read_text())["val_map_at_3"] == pytest.approx(trained, abs=1e-5)
    assert (proj / "submissions" / "submission.csv").read_text().startswith("key_id,word\n")

    # a CNN beside it, and the blend of both with weights fitted on the validation shards
    for suffix in (".keras", ".json"):
        shutil.copy(proj / "models" / "main" / f"model{suffix}", proj / "models" / f"strokes{suffix}")
    blend = {"predict": {"models": ["models/main/model.keras", "models/strokes.keras"], "weights": "fit"}}
    write_params(proj / "params.yaml", blend)
    train.main(["--quiet"])
    predict.main(["--quiet"])
    report = json.loads((proj / "reports" / "test.json").read_text())
    assert report["models"] == 2 and len(report["weights"]) == 2 and sum(report["weights"]) == pytest.approx(1)
    alone = report["val_map_at_3_alone"]
    assert set(alone) == {"models/main/model.keras", "models/strokes.keras"}
    assert report["val_map_at_3_blend"] >= max(alone.values())  # either model alone is on the grid
    assert alone["models/strokes.keras"] == pytest.approx(trained, abs=1e-4)  # the same validation drawings
