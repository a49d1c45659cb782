"""The classical baseline stage (doodle/baseline/run.py, stages/baseline.py): a PCA + SVM fitted on a bounded,
seeded sample of the training images, scored on the validation split, well above chance."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from doodle.baseline.run import (
    BaselineParams,
    cache_sample,
    fit,
    run,
    sample_rows,
    score_split,
    shard_sample,
    training_groups,
    true_rank,
)
from doodle.batches.cache import open_split
from doodle.core.params import ParamError
from doodle.render.params import RenderSection
from stages import cli
from tests.conftest import work_on_copy

TIMINGS = ("sample_seconds", "pca_fit_seconds", "svm_fit_seconds", "fit_seconds", "predict_seconds")


def untimed(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in TIMINGS and k != "predict_images_per_s"}


def quiet_run(project: Path, cfg: BaselineParams, render_cfg: RenderSection | None = None) -> dict:
    render_cfg = render_cfg or RenderSection(size=32, workers=1)
    return run(
        project / "data/cache", project / "data/shards", cfg, render_cfg, progress=False, log=lambda line: None
    ).values


def test_sample_rows_are_a_bounded_seeded_uniform_sample():
    rows = sample_rows(100_000, 500, seed=3)
    assert len(rows) == 500 and len(np.unique(rows)) == 500 and np.all(np.diff(rows) > 0)
    assert rows.min() >= 0 and rows.max() < 100_000
    assert np.array_equal(rows, sample_rows(100_000, 500, seed=3))
    assert not np.array_equal(rows, sample_rows(100_000, 500, seed=4))
    assert np.array_equal(sample_rows(7, 10, seed=0), np.arange(7))  # fewer rows than asked: all of them
    # uniform: each decile of the range holds about a tenth of a large sample
    big = sample_rows(1_000_000, 20_000, seed=0)
    per_decile = np.bincount(big // 100_000, minlength=10)
    assert per_decile.min() > 1_800 and per_decile.max() < 2_200


def test_true_rank_scores_as_the_project_metric_does():
    from doodle.core.metrics import map_at_3, top_k_accuracy

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(500, 9)).astype(np.float64)  # many ties: broken towards the lower index
    scores[:50, 2] = -np.inf  # a class the training sample did not hold
    labels = rng.integers(0, 9, size=500)
    rank = true_rank(scores, labels)
    assert np.isclose(((rank < 3) * (1 / (rank + 1))).mean(), map_at_3(labels, scores))
    assert np.isclose((rank == 0).mean(), top_k_accuracy(labels, scores, 1))
    assert np.isclose((rank < 3).mean(), top_k_accuracy(labels, scores, 3))


def test_stage_writes_headline_metrics_and_report_well_above_chance(rendered, tmp_path, monkeypatch, capsys):
    work_on_copy(rendered, tmp_path / "p", monkeypatch)
    from stages import baseline

    baseline.main(["--quiet"])
    metrics = json.loads(Path("metrics/baseline.json").read_text())
    report = json.loads(Path("reports/baseline.json").read_text())
    # the keys metrics/eval.json uses: `dvc metrics show` puts them in the network's columns
    assert set(metrics) == {"val_map_at_3", "val_top1", "val_top3"}
    assert all(0 <= v <= 1 for v in metrics.values())
    assert metrics["val_top1"] <= metrics["val_map_at_3"] <= metrics["val_top3"]
    val, train = open_split("data/cache", "val"), open_split("data/cache", "train")
    assert report["val_rows"] == val.rows > 0
    assert report["train_rows"] == report["train_rows_available"] == train.rows  # fewer than max_rows: all
    assert report["train_source"] == "cache" and report["classes"] == 4 == report["classes_in_sample"]
    assert report["pca_components"] == 50 and 0 < report["explained_variance"] <= 1
    assert report["fit_seconds"] > 0 and report["predict_seconds"] > 0 and report["support_vectors"] > 0
    assert set(report["per_class_top1"]) == {"circle", "line", "square", "star"}
    # real quality: 4 shapes, chance is 0.25 (top-1); a model that learned nothing (or scored the wrong
    # rows against the labels) sits near it
    assert metrics["val_top1"] > 0.7, metrics  # 2.8x chance; measured 0.80
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("baseline: val MAP@3 ") and f"on {val.rows:,} drawings" in out[-1]


def test_subsample_bound_and_seed(rendered):
    cfg = BaselineParams(max_rows=40, pca_components=10, val_max_rows=25)
    first = quiet_run(rendered, cfg)
    assert first["train_rows"] == 40 < first["train_rows_available"]
    assert first["val_rows"] == 25
    assert untimed(quiet_run(rendered, cfg)) == untimed(first)  # the same seed: the same everything
    split = open_split(rendered / "data/cache", "train")
    images, labels = cache_sample(split, cfg)
    rows = sample_rows(split.rows, 40, cfg.seed)
    assert images.shape == (40, 32, 32, 1)
    assert np.array_equal(images, np.concatenate([np.asarray(a) for a in split.images])[rows])
    assert np.array_equal(labels, split.all_labels()[rows])
    other, _ = cache_sample(split, dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(other, images)


def test_training_sample_from_the_shards_equals_the_cache(rendered):
    """render.train_cache: false leaves no training images in the cache: the sample is drawn from
    the shards, the same drawings as the same bytes, so the baseline's figures do not change."""
    cfg = BaselineParams(max_rows=70, pca_components=20)
    cached, on_the_fly = RenderSection(size=32, workers=1), RenderSection(size=32, workers=1, train_cache=False)
    a_img, a_lab = cache_sample(open_split(rendered / "data/cache", "train"), cfg)
    b_img, b_lab = shard_sample(rendered / "data/shards", on_the_fly, cfg)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    a, b = quiet_run(rendered, cfg, cached), quiet_run(rendered, cfg, on_the_fly)
    assert b["train_source"] == "shards"
    assert {**untimed(a), "train_source": None} == {**untimed(b), "train_source": None}
    # render.max_per_shard and render.train_shards bound the training set as they bound the cache
    bounded = RenderSection(size=32, workers=1, train_cache=False, max_per_shard=9, train_shards=1)
    assert sum(n for _, _, n in training_groups(rendered / "data/shards", bounded)) == 9
    with pytest.raises(ParamError, match="render"):  # drawn otherwise than the validation cache
        quiet_run(rendered, cfg, dataclasses.replace(on_the_fly, size=28))


def test_scoring_in_batches_and_classes_missing_from_the_sample(rendered):
    cache = rendered / "data/cache"
    split = open_split(cache, "train")
    images, labels = cache_sample(split, BaselineParams(max_rows=1000))
    two = np.isin(labels, [1, 3])  # only 2 of the 4 classes: scikit-learn's binary decision shape
    model = fit(images[two], labels[two], 4, BaselineParams(pca_components=8))
    scores = model.scores(images[:5])
    assert scores.shape == (5, 4) and np.all(np.isneginf(scores[:, [0, 2]])) and np.all(np.isfinite(scores[:, [1, 3]]))
    val = open_split(cache, "val")
    whole = score_split(model, val)
    assert score_split(model, val, batch=7)["val_map_at_3"] == pytest.approx(whole["val_map_at_3"])
    assert whole["val_top1"] < 0.75  # half the classes can never come first
    assert score_split(model, val, limit=11, batch=4)["val_rows"] == 11


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"pca_components": 0}, "baseline.pca_components"),
        ({"pca_components": 2000}, "baseline.pca_components"),  # more than the 32x32 = 1,024 features
        ({"max_rows": 1}, "baseline.max_rows"),
        ({"svm_c": 0.0}, "baseline.svm_c"),
        ({"kernel": "tree"}, "baseline.kernel"),
        ({"gamma": "wide"}, "baseline.gamma"),
        ({"val_max_rows": 0}, "baseline.val_max_rows"),
        ({"svm_C": 1.0}, "baseline.svm_C"),
    ],
)
def test_a_bad_param_is_one_line_naming_it(bad, key, rendered, tmp_path, monkeypatch, capsys):
    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"baseline": bad})
    from stages import baseline

    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: baseline.main(["--quiet"]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0], err
    assert not Path("metrics/baseline.json").exists()


def test_image_shards_without_a_training_cache_name_the_param(rendered, tmp_path):
    """A pixel source's shards hold images, not strokes: with render.train_cache: false there is
    nothing to draw the sample from, and the error says which param to change."""
    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shutil.copytree(rendered / "data/shards", shards)
    first = shards / "shard-000.parquet"
    pq.write_table(pq.read_table(first).drop_columns(["x", "y", "stroke_len"]), first)
    with pytest.raises(ParamError, match=r"render\.train_cache.*shard-000\.parquet"):
        training_groups(shards, RenderSection(size=32, workers=1, train_cache=False))
