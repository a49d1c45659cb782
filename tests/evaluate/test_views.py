"""The evaluate stage's views (doodle.evaluate.views): the embedding of penultimate features and the conv
activation maps, for every architecture, any class count, 1 or 3 channels, and a model without convs."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from doodle.batches.cache import open_split
from doodle.core.metrics import chance_map_at_3, near_chance
from doodle.core.params import ParamError, from_mapping
from doodle.core.plots import guarded, scatter_by_class
from doodle.evaluate.analysis import iter_batches
from doodle.evaluate.params import EvaluateParams
from doodle.evaluate.views import (
    ACTIVATION_LAYERS,
    conv_model,
    embed,
    sample_views,
    unembeddable,
    write_views,
)
from doodle.models import build_model
from stages.cli import subprocess_env
from tests.conftest import work_on_copy, write_params


def batches_of(images, labels, size, consumed=None):
    for a in range(0, len(labels), size):
        if consumed is not None:
            consumed.append(a)
        yield images[a : a + size], labels[a : a + size]


def synthetic(n, classes, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int16)


def test_trained_model_views_from_the_evaluate_stage(rendered, tmp_path, monkeypatch, capsys):
    """Train the tiny sample model, run the stage: both PNGs are written, and the embedding holds
    exactly the first ``embedding_samples`` validation drawings."""
    work_on_copy(rendered, tmp_path / "p", monkeypatch)
    from stages import evaluate, predict, train

    write_params(
        Path("params.yaml"), {"evaluate": {"embedding": "tsne", "embedding_samples": 50, "activation_images": 3}}
    )
    train.main(["--quiet"])
    predict.main(["--quiet"])  # reports/blend.json: the models evaluate scores
    capsys.readouterr()
    evaluate.main(["--quiet"])
    out = capsys.readouterr().out
    assert "t-SNE embedding of 50 drawings" in out and "activations of 3 conv layers" in out
    for png in ("embedding.png", "activations.png"):
        assert (Path("reports") / png).stat().st_size > 5000
    assert set(json.loads(Path("reports/eval.json").read_text())) == {
        "val_map_at_3",
        "val_top1",
        "val_top3",
        "val_rows",
    }

    from doodle.predict.inference import TrainedModel

    model = TrainedModel.load("models/main/model.keras")
    val = open_split("data/cache", "val")
    labels = val.all_labels()
    consumed = []

    def counted():
        for batch in iter_batches(val, 16):
            consumed.append(len(batch[1]))
            yield batch

    emb, examples = sample_views(model.model, counted(), 40, 3, "pca")
    assert emb.points.shape == (40, 2) and emb.method == "PCA"
    assert np.array_equal(emb.labels, labels[:40])  # the first rows, in cache order
    assert sum(consumed) < 40 + 16  # stops reading once it has the sample
    assert len({lab for _, lab in examples}) == 3  # images of different classes
    emb, _ = sample_views(model.model, iter_batches(val, 16), 10_000, 3, "pca")
    assert len(emb.points) == val.rows  # a sample larger than the split takes the whole split


@pytest.mark.parametrize(
    "name,shape",
    [("cnn", (32, 32, 3)), ("seed_cnn", (32, 32, 1)), ("mobilenet", (32, 32, 1)), ("efficientnet", (32, 32, 3))],
)
def test_activation_taps_equal_the_conv_layers_outputs(name, shape):
    """The first Conv2D outputs, reached inside a nested backbone too, equal that layer's own output."""
    keras.utils.set_random_seed(0)
    model = build_model(name, shape, 7, width=0.25)
    taps, names = conv_model(model)
    assert len(names) == ACTIVATION_LAYERS
    x, _ = synthetic(2, 7, shape)
    got = [np.asarray(t) for t in taps(x, training=False)]
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    inner = nested[0] if nested else model
    for layer_name, g in zip(names, got):
        layer = inner.get_layer(layer_name)
        assert isinstance(layer, keras.layers.Conv2D)
        if nested:  # the backbone's own graph, fed the rescaled image (the input head)
            ref = keras.Model(inner.input, layer.output)(x.astype(np.float32) / 255, training=False)
        else:
            ref = keras.Model(model.input, layer.output)(x, training=False)
        np.testing.assert_allclose(g, np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_model_without_conv_layers_skips_the_activations_cleanly(tmp_path, caplog):
    model = build_model("mlp", (32, 32, 1), 5, width=0.25)
    images, labels = synthetic(60, 5, (32, 32, 1))
    with caplog.at_level(logging.INFO, logger="doodle.evaluate.views"):
        seen = write_views(
            model, batches_of(images, labels, 25), list("abcde"), EvaluateParams(None, 30, "pca", 4), tmp_path
        )
    assert seen["activation_layers"] == 0 and seen["embedding_points"] == 30
    assert any("has no Conv2D layer" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "activations.png").stat().st_size > 1000 and (tmp_path / "embedding.png").stat().st_size > 5000


def test_many_classes_and_three_channels(tmp_path):
    """40 classes (names at centroids, no legend), 3 channels; an empty split still writes both files."""
    keras.utils.set_random_seed(0)
    classes = [f"class {i}" for i in range(40)]
    model = build_model("cnn", (32, 32, 3), len(classes), width=0.125)
    images, labels = synthetic(120, len(classes), (32, 32, 3))
    seen = write_views(model, batches_of(images, labels, 50), classes, EvaluateParams(None, 60, "pca", 2), tmp_path)
    assert seen == {
        "embedding": "PCA",
        "embedding_points": 60,
        "embedding_seconds": seen["embedding_seconds"],
        "embedding_skipped": None,
        "activation_layers": ACTIVATION_LAYERS,
        "activation_images": 2,
    }
    assert (tmp_path / "embedding.png").stat().st_size > 5000 and (tmp_path / "activations.png").stat().st_size > 5000
    empty = write_views(model, iter([]), classes, EvaluateParams(), tmp_path / "empty")
    assert empty["embedding_points"] == 0 and {p.name for p in (tmp_path / "empty").iterdir()} == {
        "embedding.png",
        "activations.png",
    }


def test_scatter_legend_or_centroid_labels(tmp_path, monkeypatch):
    import matplotlib.axes

    calls = {"legend": 0, "text": 0}
    real_legend, real_text = matplotlib.axes.Axes.legend, matplotlib.axes.Axes.text
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "legend",
        lambda self, *a, **k: calls.__setitem__("legend", 1) or real_legend(self, *a, **k),
    )
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "text",
        lambda self, *a, **k: calls.__setitem__("text", calls["text"] + 1) or real_text(self, *a, **k),
    )
    rng = np.random.default_rng(0)
    for n_classes, legend, texts in ((3, 1, 0), (40, 0, 40)):
        calls.update(legend=0, text=0)
        labels = np.arange(200) % n_classes
        scatter_by_class(
            rng.normal(size=(200, 2)), labels, labels[::-1], [str(i) for i in range(n_classes)], tmp_path / "s.png", "t"
        )
        assert (calls["legend"], calls["text"]) == (legend, texts)


def test_pca_embedding_matches_the_principal_components():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1, 0.1])
    points, name = embed(x, "pca")
    assert name == "PCA" and points.shape == (300, 2)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(points), np.abs(centred @ vt[:2].T), atol=1e-9)
    np.testing.assert_allclose(points.std(axis=0, ddof=1), s[:2] / np.sqrt(299), rtol=1e-9)
    assert embed(x[:5], "tsne")[1] == "PCA"  # too few points for t-SNE


def test_view_params_are_checked():
    assert EvaluateParams() == from_mapping(EvaluateParams, {}, "evaluate")
    with pytest.raises(ParamError, match="evaluate.embedding"):
        from_mapping(EvaluateParams, {"embedding": "umap"}, "evaluate")
    with pytest.raises(ParamError, match="evaluate.embedding_samples"):
        from_mapping(EvaluateParams, {"embedding_samples": 1}, "evaluate")


def unlearned(model):
    """``model`` with every layer but the Dense head zeroed: the same features (zeros) for every
    drawing, as a model that has not learned gives nearly."""
    for layer in model.layers[:-1]:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return model


def test_features_without_spread_or_with_nan_are_not_embedded():
    rng = np.random.default_rng(0)
    constant = np.full((300, 64), 0.5, np.float32)
    assert "no variance" in unembeddable(constant)
    assert "no variance" in unembeddable(constant + rng.normal(0, 1e-9, constant.shape))  # float rounding only
    nan = rng.normal(size=(300, 64))
    nan[3, 5] = np.nan
    assert "NaN" in unembeddable(nan)
    # a small but real spread is embedded, and t-SNE's start (computed here, not by scikit-learn's
    # init="pca", which divides by the spread) gives finite points
    small = constant + rng.normal(0, 1e-3, constant.shape)
    assert unembeddable(small) is None
    points, name = embed(small, "tsne")
    assert name == "t-SNE" and points.shape == (300, 2) and np.isfinite(points).all()


def test_views_of_a_model_that_has_not_learned(tmp_path, caplog):
    """Constant features: the t-SNE view (which would crash scikit-learn's compiled code) is
    skipped with its reason in the picture and the summary; the activations are still drawn."""
    keras.utils.set_random_seed(0)
    model = unlearned(build_model("cnn", (32, 32, 1), 5, width=0.125))
    images, labels = synthetic(120, 5, (32, 32, 1))
    with caplog.at_level(logging.WARNING, logger="doodle.evaluate.views"):
        seen = write_views(
            model, batches_of(images, labels, 50), list("abcde"), EvaluateParams(None, 100, "tsne", 3), tmp_path
        )
    assert seen["embedding_skipped"] == "features have no variance: the model has not learned"
    assert seen["embedding_points"] == 0 and seen["activation_layers"] == ACTIVATION_LAYERS
    assert any("embedding skipped" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "embedding.png").stat().st_size > 1000 and (tmp_path / "activations.png").stat().st_size > 5000


def test_a_failing_picture_becomes_a_picture_saying_why(tmp_path, caplog):
    def broken():
        raise ValueError("boom")

    with caplog.at_level(logging.WARNING, logger="doodle.core.plots"):
        assert guarded("embedding", tmp_path / "e.png", broken) is None
    assert guarded("other", tmp_path / "o.png", lambda: 7) == 7 and not (tmp_path / "o.png").exists()
    assert (tmp_path / "e.png").stat().st_size > 1000
    assert any("embedding view skipped: ValueError: boom" in r.getMessage() for r in caplog.records)


def test_near_chance_rule():
    assert chance_map_at_3(340) == pytest.approx((1 + 1 / 2 + 1 / 3) / 340)
    assert chance_map_at_3(2) == pytest.approx(0.75) and chance_map_at_3(1) == 1.0
    assert near_chance(0.0053, 340) and not near_chance(0.05, 340)  # the 30 s model; a learning one
    assert near_chance(0.45, 4) and not near_chance(0.9, 4)  # few classes: within 0.1 of chance, not 2x
    assert not near_chance(1.0, 1)


def test_evaluate_stage_completes_on_a_model_that_has_not_learned(rendered, tmp_path, monkeypatch):
    """The real stage, in its own process (a crash in compiled code shows as a negative exit),
    with t-SNE on: exit 0, every metric and report written, the summary says near chance and why
    the embedding is skipped."""
    work_on_copy(rendered, tmp_path / "p", monkeypatch)
    from doodle.predict.inference import TrainedModel
    from stages import predict, train

    write_params(Path("params.yaml"), {"evaluate": {"embedding": "tsne", "embedding_samples": 100}})
    train.main(["--quiet"])
    predict.main(["--quiet"])  # reports/blend.json: the models evaluate scores
    model = TrainedModel.load("models/main/model.keras").model
    unlearned(model).save("models/main/model.keras")
    r = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--quiet"], env=subprocess_env(), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "near chance" in r.stdout and "embedding skipped (features have no variance" in r.stdout
    metrics = json.loads(Path("metrics/eval.json").read_text())
    assert set(metrics) == {"val_map_at_3", "val_top1", "val_top3"} and metrics["val_map_at_3"] < 0.6
    for name in ("per_class_accuracy.csv", "confusion.csv", "confused_pairs.csv", "confidence.png"):
        assert (Path("reports") / name).stat().st_size > 0
    for name in ("misclassified.png", "embedding.png", "activations.png"):
        assert (Path("reports") / name).stat().st_size > 1000
