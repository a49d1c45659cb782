"""Stage `evaluate`: score the model on the validation shards and draw the error analysis.

metrics/eval.json (MAP@3, top-1, top-3, worst classes), reports/ (per-class accuracy, confusion
data for `dvc plots`, most-confused pairs, a gallery of mistakes, confidence histograms).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from doodle.cache import open_split, read_cache_manifest
from doodle.inference import TrainedModel, _predict
from doodle.metrics import map_at_3, top_k_accuracy
from doodle.plots import histogram, image_grid
from stages import _cli

CACHE = Path("data/cache")
MODEL = Path("models/model.keras")
METRICS = Path("metrics/eval.json")
REPORTS = Path("reports")
MAX_CONFUSION_CLASSES = 30


def confused_pairs(labels: np.ndarray, pred: np.ndarray, n_classes: int, k: int = 20):
    """The k most frequent (true, predicted) mistakes as (true, pred, count)."""
    mistakes = labels != pred
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (labels[mistakes], pred[mistakes]), 1)
    flat = np.argsort(-m, axis=None, kind="stable")[:k]
    return [(int(i // n_classes), int(i % n_classes), int(m.flat[i])) for i in flat if m.flat[i] > 0]


def main(argv=None) -> None:
    _cli.parser(__doc__).parse_args(argv)
    model = TrainedModel.load(MODEL)
    cache = read_cache_manifest(CACHE)
    if cache["render"] != model.render.to_dict():
        raise ValueError(
            f"{CACHE} was rendered with {cache['render']} but {MODEL} expects "
            f"{model.render.to_dict()}: rerun `dvc repro`"
        )
    val = open_split(CACHE, "val")
    classes = model.classes
    labels = val.all_labels()
    probs = np.concatenate([_predict(model.model, np.asarray(im), 512) for im in val.images])
    pred = probs.argmax(axis=1)
    n = len(classes)

    counts = np.bincount(labels, minlength=n)
    correct = np.bincount(labels[pred == labels], minlength=n)
    per_class = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
    ranked = [i for i in np.argsort(per_class, kind="stable") if counts[i] > 0]
    worst = [{"class": classes[i], "accuracy": round(float(per_class[i]), 4), "n": int(counts[i])} for i in ranked[:20]]
    pairs = confused_pairs(labels, pred, n)
    metrics = {
        "val_map_at_3": map_at_3(labels, probs),
        "val_top1": top_k_accuracy(labels, probs, 1),
        "val_top3": top_k_accuracy(labels, probs, 3),
        "val_rows": len(labels),
        "worst_classes": {w["class"]: w["accuracy"] for w in worst},
    }
    METRICS.parent.mkdir(exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")

    REPORTS.mkdir(exist_ok=True)
    with (REPORTS / "per_class_accuracy.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "accuracy", "n"])
        w.writerows((classes[i], round(float(per_class[i]), 4), int(counts[i])) for i in ranked)
    with (REPORTS / "confused_pairs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actual", "predicted", "count"])
        w.writerows((classes[a], classes[b], c) for a, b, c in pairs)
    # confusion data for `dvc plots` (template: confusion): all classes when few, else the most confused
    if n <= MAX_CONFUSION_CLASSES:
        keep = np.ones(len(labels), bool)
    else:
        top = list(dict.fromkeys(c for a, b, _ in pairs for c in (a, b)))[:MAX_CONFUSION_CLASSES]
        keep = np.isin(labels, top) & np.isin(pred, top)
    with (REPORTS / "confusion.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actual", "predicted"])
        w.writerows((classes[a], classes[b]) for a, b in zip(labels[keep], pred[keep]))

    conf = probs.max(axis=1)
    histogram(
        {"correct": conf[pred == labels], "wrong": conf[pred != labels]},
        REPORTS / "confidence.png",
        "top-1 probability",
        "confidence of correct vs wrong predictions",
    )
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:40]  # the most confident mistakes first
    if len(wrong):
        offsets = np.cumsum([0] + [len(x) for x in val.labels])
        imgs = []
        for i in wrong:
            s = int(np.searchsorted(offsets, i, side="right") - 1)
            imgs.append(np.asarray(val.images[s][i - offsets[s]]))
        titles = [f"{classes[labels[i]]}\n-> {classes[pred[i]]} {conf[i]:.2f}" for i in wrong]
        image_grid(
            np.stack(imgs), titles, REPORTS / "misclassified.png", title="most confident mistakes (true -> predicted)"
        )
    else:
        image_grid(
            np.zeros((0, *model.render.shape()), np.uint8),
            [],
            REPORTS / "misclassified.png",
            title="no mistakes on the validation set",
        )
    print(
        f"evaluate: val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_top1']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} on {len(labels):,} drawings; worst: "
        + ", ".join(f"{w['class']} {w['accuracy']:.2f}" for w in worst[:5])
    )


if __name__ == "__main__":
    _cli.run(main)
