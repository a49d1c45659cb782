"""The streaming error analysis (doodle.evaluate.analysis) against the one-shot, all-in-memory computation."""

import csv
import json
import shutil

import numpy as np
import pytest

from doodle.batches.cache import CacheSplit
from doodle.core.errors import UserError
from doodle.core.metrics import map_at_3, top_k_accuracy
from doodle.evaluate.analysis import ErrorAnalysis, analyse_split, capped_rows, confused_pairs, iter_batches

BINS = np.linspace(0, 1, 26)


def in_memory(labels, probs, images, sample_rows, max_classes=30, k_mistakes=40):
    """What the evaluate stage computed before it streamed: every score row at once."""
    n = probs.shape[1]
    pred = probs.argmax(axis=1)
    counts = np.bincount(labels, minlength=n)
    correct = np.bincount(labels[pred == labels], minlength=n)
    per_class = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
    ranked = [int(i) for i in np.argsort(per_class, kind="stable") if counts[i] > 0]
    mistakes = labels != pred
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (labels[mistakes], pred[mistakes]), 1)
    flat = np.argsort(-m, axis=None, kind="stable")[:20]
    pairs = [(int(i // n), int(i % n), int(m.flat[i])) for i in flat if m.flat[i] > 0]
    sample_labels, sample_pred = labels[:sample_rows], pred[:sample_rows]
    if n <= max_classes:
        keep = np.ones(len(sample_labels), bool)
    else:
        top = list(dict.fromkeys(c for a, b, _ in pairs for c in (a, b)))[:max_classes]
        keep = np.isin(sample_labels, top) & np.isin(sample_pred, top)
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:k_mistakes]
    return {
        "metrics": {
            "val_map_at_3": map_at_3(labels, probs),
            "val_top1": top_k_accuracy(labels, probs, 1),
            "val_top3": top_k_accuracy(labels, probs, 3),
            "val_rows": len(labels),
        },
        "per_class": [(i, round(float(per_class[i]), 4), int(counts[i])) for i in ranked],
        "pairs": pairs,
        "confusion": (sample_labels[keep], sample_pred[keep]),
        "histogram": {
            "correct": np.histogram(conf[pred == labels], BINS)[0],
            "wrong": np.histogram(conf[pred != labels], BINS)[0],
        },
        "mistakes": [(int(i), int(labels[i]), int(pred[i]), float(conf[i])) for i in wrong],
        "mistake_images": images[wrong],
    }


def random_scores(seed, rows, classes):
    """Softmax-like scores with a signal on the truth, plus the tie cases: scores rounded to two
    decimals (ties within rows and equal confidences across rows) and uniform rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    labels[labels == 3] = 2  # a class with no drawings
    logits = rng.normal(0, 1, (rows, classes))
    logits[np.arange(rows), labels] += rng.uniform(0, 3, rows)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[::7] = np.round(probs[::7], 2)
    probs[::31] = 1 / classes
    images = rng.integers(0, 256, (rows, 4, 4, 1), dtype=np.uint8)
    return labels, probs.astype(np.float32), images


def assert_same(result: ErrorAnalysis, ref: dict) -> None:
    got = result.metrics()
    assert got["val_rows"] == ref["metrics"]["val_rows"]
    assert got["val_top1"] == ref["metrics"]["val_top1"] and got["val_top3"] == ref["metrics"]["val_top3"]
    # counted ranks rather than summed fractions: equal up to float rounding, whatever the batching
    assert got["val_map_at_3"] == pytest.approx(ref["metrics"]["val_map_at_3"], rel=1e-12)
    counts, acc = result.class_counts, result.per_class_accuracy()
    assert [(i, round(float(acc[i]), 4), int(counts[i])) for i in result.ranked_classes()] == ref["per_class"]
    assert result.confused_pairs() == ref["pairs"]
    actual, pred = result.confusion_sample()
    assert np.array_equal(actual, ref["confusion"][0]) and np.array_equal(pred, ref["confusion"][1])
    for name in ("correct", "wrong"):
        assert np.array_equal(result.confidence[name], ref["histogram"][name])
        assert result.confidence_rows[name] == ref["histogram"][name].sum()
    assert [(m.index, m.actual, m.predicted, m.confidence) for m in result.mistakes] == ref["mistakes"]
    assert np.array_equal(np.array([m.image for m in result.mistakes]), ref["mistake_images"])


@pytest.mark.parametrize("classes", [7, 60])  # all classes in confusion.csv / only the 30 most confused
@pytest.mark.parametrize("batch", [1, 37, 5000])
def test_streaming_equals_in_memory(classes, batch):
    labels, probs, images = random_scores(classes + batch, 3000, classes)
    for sample_rows in (700, 20_000):  # the confusion sample capped, and holding every row
        result = ErrorAnalysis(classes, sample_rows=sample_rows)
        for a in range(0, len(labels), batch):
            result.update(labels[a : a + batch], probs[a : a + batch], images[a : a + batch])
        assert_same(result, in_memory(labels, probs, images, sample_rows))


def test_no_mistakes_and_an_empty_split():
    labels = np.array([0, 1, 2, 1])
    probs = np.eye(3, dtype=np.float32)[labels]
    result = ErrorAnalysis(3)
    result.update(labels, probs, np.zeros((4, 2, 2, 1), np.uint8))
    assert result.metrics() == {"val_map_at_3": 1.0, "val_top1": 1.0, "val_top3": 1.0, "val_rows": 4}
    assert result.mistakes == [] and result.confused_pairs() == []
    assert ErrorAnalysis(3).metrics()["val_rows"] == 0


def test_confused_pairs_ignores_the_diagonal_and_breaks_ties_in_row_major_order():
    m = np.array([[9, 2, 0], [1, 9, 2], [0, 2, 9]])
    assert confused_pairs(m, k=3) == [(0, 1, 2), (1, 2, 2), (2, 1, 2)]


def encoded_split(tmp_path, shard_rows, as_files):
    """A split whose images carry their own row number, so a fake model can look up its scores."""
    split, start = CacheSplit([], [], []), 0
    for s, n in enumerate(shard_rows):
        idx = np.arange(start, start + n)
        images = np.zeros((n, 4, 4, 1), np.uint8)
        images[:, 0, :3, 0] = np.stack([idx & 255, (idx >> 8) & 255, idx >> 16], axis=1)
        if as_files:
            np.save(tmp_path / f"s{s}.npy", images)
            images = np.load(tmp_path / f"s{s}.npy", mmap_mode="r")
        split.images.append(images)
        split.labels.append(np.zeros(n, np.int16))
        split.keys.append(idx)
        start += n
    return split


def row_numbers(images):
    px = images[:, 0, :3, 0].astype(np.int64)
    return px[:, 0] | px[:, 1] << 8 | px[:, 2] << 16


def three_files(tmp_path, as_files: bool):
    """A split of 1000 + 1 + 777 rows with random labels and scores, and a model stand-in that
    records the batch sizes it is given (``seen``)."""
    split = encoded_split(tmp_path, [1000, 1, 777], as_files)
    labels, probs, _ = random_scores(5, 1778, 40)
    for s, a in zip(split.labels, [0, 1000, 1001]):
        s[:] = labels[a : a + len(s)]
    seen: list[int] = []

    def predict(images):
        seen.append(len(images))
        return probs[row_numbers(images)]

    return split, labels, probs, predict, seen


@pytest.mark.parametrize("as_files", [True, False])
def test_analyse_split_streams_every_row_once_in_order(tmp_path, as_files):
    split, labels, probs, predict, seen = three_files(tmp_path, as_files)
    result = analyse_split(split, predict, 40, batch_size=256, sample_rows=500)
    assert seen == [256, 256, 256, 232, 1, 256, 256, 256, 9]  # batches never straddle two files
    images = np.concatenate([np.asarray(im) for im in split.images])
    assert_same(result, in_memory(labels, probs, images, 500))


def test_a_limit_reads_only_the_first_rows_across_files(tmp_path):
    assert capped_rows([1000, 1, 777], 1200) == [1000, 1, 199]
    assert capped_rows([5, 5], None) == [5, 5] and capped_rows([5, 5], 3) == [3, 0]
    split, labels, probs, predict, seen = three_files(tmp_path, as_files=True)
    result = analyse_split(split, predict, 40, batch_size=256, sample_rows=500, limit=1200)
    assert seen == [256, 256, 256, 232, 1, 199]
    images = np.concatenate([np.asarray(im) for im in split.images])
    assert_same(result, in_memory(labels[:1200], probs[:1200], images[:1200], 500))


def test_batches_are_read_from_the_file_not_the_map(tmp_path):
    """The reader must not leave the split's pages mapped (resident memory would grow with it),
    and a slice of a map (whose file offset is not its own) is read through the map instead."""
    split = encoded_split(tmp_path, [300], as_files=True)
    batches = list(iter_batches(split, 128))
    assert [len(b[0]) for b in batches] == [128, 128, 44]
    assert all(not isinstance(im, np.memmap) and im.base is None for im, _ in batches)
    assert np.array_equal(np.concatenate([row_numbers(im) for im, _ in batches]), np.arange(300))
    sliced = CacheSplit([split.images[0][100:]], [split.labels[0][100:]], [split.keys[0][100:]])
    assert np.array_equal(np.concatenate([row_numbers(im) for im, _ in iter_batches(sliced, 64)]), np.arange(100, 300))


def test_streamed_bin_counts_draw_the_raw_values_distribution():
    """The stage streams its confidences into bin counts (doodle.evaluate.analysis); the picture drawn from
    them has, per group, the bars ``ax.hist`` would draw from every raw value as % of the group,
    the right edge and values on a bin edge included."""
    import matplotlib.pyplot as plt

    from doodle.core.plots import group_histograms_figure

    rng = np.random.default_rng(3)
    groups = {"correct": rng.beta(5, 1, 900).astype(np.float32), "wrong": rng.beta(1, 3, 300).astype(np.float32)}
    groups["correct"][:50] = 1.0  # the right edge belongs to the last bin
    groups["wrong"][:20] = 0.4  # on a bin edge
    counts = {k: np.histogram(v, BINS)[0] for k, v in groups.items()}
    fig = group_histograms_figure(counts, BINS, "top-1 probability", "t")
    for ax, (name, values) in zip(fig.axes, groups.items()):
        raw, _, _ = plt.figure().gca().hist(values, bins=BINS, weights=np.full(len(values), 100.0 / len(values)))
        np.testing.assert_allclose([p.get_height() for p in ax.patches], raw, rtol=1e-6, err_msg=name)
    plt.close("all")


def test_evaluate_stage_on_a_synthetic_cache(tmp_path, monkeypatch):
    """The stage end to end with a tiny untrained model: its files agree with the in-memory
    computation on the model's own scores, and eval.json holds scalars only."""
    import keras

    from doodle.drawing.raster import RenderParams
    from doodle.models import build_model
    from doodle.predict.inference import predict_in_batches
    from stages import evaluate

    classes, shape = [f"c{i}" for i in range(5)], RenderParams(32).shape()
    rng = np.random.default_rng(0)
    cache = tmp_path / "data" / "cache"
    cache.mkdir(parents=True)
    files, all_images, all_labels = [], [], []
    for s, (split, n) in enumerate([("train", 10), ("val", 300), ("val", 150)]):
        images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        labels = rng.integers(0, len(classes), n).astype(np.int16)
        np.save(cache / f"shard-{s:03d}.images.npy", images)
        np.save(cache / f"shard-{s:03d}.labels.npy", labels)
        np.save(cache / f"shard-{s:03d}.keys.npy", np.arange(n, dtype=np.int64))
        files.append({"prefix": f"shard-{s:03d}", "split": split, "rows": n})
        if split == "val":
            all_images.append(images)
            all_labels.append(labels.astype(np.int64))
    render = RenderParams(32).to_dict()
    manifest = {"render": render, "classes": classes, "files": files, "rows": 460}
    (cache / "manifest.json").write_text(json.dumps(manifest))
    keras.utils.set_random_seed(0)
    model = build_model("cnn", shape, len(classes), width=0.125)
    (tmp_path / "models" / "main").mkdir(parents=True)
    model.save(tmp_path / "models" / "main" / "model.keras")
    (tmp_path / "models" / "main" / "model.json").write_text(json.dumps({"classes": classes, "render": render}))
    blend = {"models": [{"name": "main", "files": ["models/main/model.keras"], "weight": 1.0}]}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "blend.json").write_text(json.dumps(blend))  # what predict records

    (tmp_path / "params.yaml").write_text("evaluate:\n  embedding: pca\n")  # the stage's only params section
    monkeypatch.chdir(tmp_path)
    evaluate.main(["--quiet"])
    ev = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert set(ev) == {"val_map_at_3", "val_top1", "val_top3", "val_rows"}
    headline = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert headline == {k: ev[k] for k in ("val_map_at_3", "val_top1", "val_top3")}
    labels, images = np.concatenate(all_labels), np.concatenate(all_images)
    probs = np.concatenate([predict_in_batches(model, im, 512) for im in all_images])
    ref = in_memory(labels, probs, images, 20_000)
    assert ev["val_rows"] == 450 and ev["val_top1"] == ref["metrics"]["val_top1"]
    assert ev["val_map_at_3"] == pytest.approx(ref["metrics"]["val_map_at_3"], rel=1e-12)

    def rows(name):
        with (tmp_path / "reports" / name).open(newline="") as fh:
            return list(csv.reader(fh))

    assert rows("per_class_accuracy.csv") == [["class", "accuracy", "n"]] + [
        [classes[i], str(a), str(n)] for i, a, n in ref["per_class"]
    ]
    assert rows("confused_pairs.csv")[1:] == [
        [classes[a], classes[b], str(c), f"{classes[a]} -> {classes[b]}"] for a, b, c in ref["pairs"]
    ]
    assert rows("confusion.csv")[1:] == [[classes[a], classes[b]] for a, b in zip(*ref["confusion"])]
    for png in ("confidence.png", "misclassified.png", "embedding.png", "activations.png"):
        assert (tmp_path / "reports" / png).stat().st_size > 1000

    # evaluate.max_rows: only the first 320 drawings (all of the first val file, 20 of the second)
    (tmp_path / "params.yaml").write_text("evaluate:\n  embedding: pca\n  max_rows: 320\n")
    evaluate.main(["--quiet"])
    ev = json.loads((tmp_path / "reports" / "eval.json").read_text())
    first = in_memory(labels[:320], probs[:320], images[:320], 20_000)
    assert ev["val_rows"] == 320 and ev["val_top1"] == first["metrics"]["val_top1"]
    assert ev["val_map_at_3"] == pytest.approx(first["metrics"]["val_map_at_3"], rel=1e-12)

    # a blend of two models (the second another untrained cnn), weighted 0.25 / 0.75: the blend's figures are
    # those of the weighted mean, and each model's MAP@3 alone is in metrics/eval.json
    keras.utils.set_random_seed(1)
    other = build_model("cnn", shape, len(classes), width=0.25)
    (tmp_path / "models" / "other").mkdir()
    other.save(tmp_path / "models" / "other" / "model.keras")
    shutil.copy(tmp_path / "models" / "main" / "model.json", tmp_path / "models" / "other" / "model.json")
    blend["models"] = [
        {**blend["models"][0], "weight": 0.25},
        {"name": "other", "files": ["models/other/model.keras"], "weight": 0.75},
    ]
    (tmp_path / "reports" / "blend.json").write_text(json.dumps(blend))
    evaluate.main(["--quiet"])
    other_probs = np.concatenate([predict_in_batches(other, im, 512) for im in all_images])
    mixed = in_memory(labels[:320], (0.25 * probs + 0.75 * other_probs)[:320], images[:320], 20_000)
    alone = in_memory(labels[:320], other_probs[:320], images[:320], 20_000)
    headline = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert headline["val_top1"] == mixed["metrics"]["val_top1"]
    assert headline["val_map_at_3"] == pytest.approx(mixed["metrics"]["val_map_at_3"], rel=1e-6)
    assert headline["models"]["main"] == pytest.approx(first["metrics"]["val_map_at_3"], rel=1e-6)
    assert headline["models"]["other"] == pytest.approx(alone["metrics"]["val_map_at_3"], rel=1e-6)

    # predict averaged in the mirrored drawings (predict.tta_flip, in its record): evaluate scores so too
    (tmp_path / "reports" / "blend.json").write_text(json.dumps({**blend, "tta_flip": True}))
    evaluate.main(["--quiet"])

    def flipped(m):
        return np.concatenate(
            [(predict_in_batches(m, im, 512) + predict_in_batches(m, im[:, :, ::-1], 512)) / 2 for im in all_images]
        )

    tta = in_memory(labels[:320], (0.25 * flipped(model) + 0.75 * flipped(other))[:320], images[:320], 20_000)
    headline = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert headline["val_map_at_3"] == pytest.approx(tta["metrics"]["val_map_at_3"], rel=1e-6)
    assert tta["metrics"]["val_map_at_3"] != pytest.approx(mixed["metrics"]["val_map_at_3"], rel=1e-6)

    # a cache drawn differently from the model's training, on shards of images (no strokes to draw the model's own)
    manifest["render"] = {**render, "line_width": 8.0}
    (cache / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "data" / "shards").mkdir()
    (tmp_path / "data" / "shards" / "manifest.json").write_text(json.dumps({"content": "images"}))
    with pytest.raises(UserError, match="rerun `dvc repro`"):  # one line from stages.cli.run, no traceback
        evaluate.main(["--quiet"])
