"""Stage `evaluate`: score the model on the validation shards and draw the error analysis.

metrics/eval.json (MAP@3, top-1, top-3, rows: scalars only, so `dvc metrics show` fits a terminal),
reports/ (per-class accuracy worst first, confusion data for `dvc plots`, most-confused pairs, a
gallery of mistakes, confidence histograms). The split is streamed in batches, so memory does not
grow with its size (see doodle.evaluate.analysis); reports/confusion.csv holds the first
doodle.evaluate.analysis.SAMPLE_ROWS validation drawings (a uniform sample: the shards are shuffled).
reports/embedding.png and reports/activations.png show what the network sees (doodle.evaluate.views,
params section ``evaluate``): its penultimate features of the first ``evaluate.embedding_samples``
validation drawings in 2-D, and its first conv layers' activations for a few of them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doodle.batches.cache import open_split, read_cache_manifest
from doodle.core.errors import UserError
from doodle.core.params import load_section, read_params
from doodle.core.plots import group_histograms, image_grid
from doodle.evaluate.analysis import ErrorAnalysis, analyse_split, iter_batches
from doodle.evaluate.views import ViewParams, write_views
from doodle.predict.inference import TrainedModel, predict_in_batches
from stages import cli

CACHE = Path("data/cache")
MODEL = Path("models/model.keras")
REPORTS = Path("reports")
BATCH = 512


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    views = load_section(ViewParams, "evaluate", read_params(args.params))
    model = TrainedModel.load(MODEL)
    cache = read_cache_manifest(CACHE)
    if cache["render"] != model.render.to_dict():
        raise UserError(  # one line, no traceback: the fix is to rebuild, not to debug
            f"{CACHE} was rendered with {cache['render']} but {MODEL} expects "
            f"{model.render.to_dict()}: rerun `dvc repro`"
        )
    val = open_split(CACHE, "val")
    classes = model.classes
    with tqdm(total=val.rows, unit="img", desc="evaluate", disable=args.quiet) as bar:
        result = analyse_split(
            val, lambda images: predict_in_batches(model.model, images, BATCH), len(classes), BATCH, bar.update
        )
    metrics = result.metrics()
    cli.write_metrics("eval", metrics, headline=("val_map_at_3", "val_top1", "val_top3"))
    write_reports(result, classes, model.render.shape())
    ranked, accuracy = result.ranked_classes(), result.per_class_accuracy()
    print(
        f"evaluate: val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_top1']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} on {result.rows:,} drawings; worst: "
        + ", ".join(f"{classes[i]} {accuracy[i]:.2f}" for i in ranked[:5])
    )
    seen = write_views(model.model, iter_batches(val, BATCH), classes, views, REPORTS)
    print(
        f"evaluate: {seen['embedding']} embedding of {seen['embedding_points']:,} drawings "
        f"({seen['embedding_seconds']:.1f}s), activations of {seen['activation_layers']} conv layers "
        f"-> {REPORTS / 'embedding.png'}, {REPORTS / 'activations.png'}"
    )


def write_reports(result: ErrorAnalysis, classes: list[str], image_shape: tuple) -> None:
    REPORTS.mkdir(exist_ok=True)
    counts, accuracy = result.class_counts, result.per_class_accuracy()
    _write_csv(
        REPORTS / "per_class_accuracy.csv",
        ["class", "accuracy", "n"],
        ((classes[i], round(float(accuracy[i]), 4), int(counts[i])) for i in result.ranked_classes()),
    )
    _write_csv(  # pair: the label of the bar `dvc plots show` draws for each pair (dvc.yaml)
        REPORTS / "confused_pairs.csv",
        ["actual", "predicted", "count", "pair"],
        ((classes[a], classes[b], c, f"{classes[a]} -> {classes[b]}") for a, b, c in result.confused_pairs()),
    )
    actual, predicted = result.confusion_sample()
    _write_csv(
        REPORTS / "confusion.csv",
        ["actual", "predicted"],
        ((classes[a], classes[b]) for a, b in zip(actual, predicted)),
    )
    group_histograms(  # one panel a group, each normalised: the few wrong ones stay visible
        result.confidence,
        result.bins,
        REPORTS / "confidence.png",
        "top-1 probability",
        "confidence of correct vs wrong predictions (each panel: % of its own group)",
        totals=result.confidence_rows,
    )
    mistakes = result.mistakes
    if mistakes:
        image_grid(
            np.stack([m.image for m in mistakes]),
            [f"{classes[m.actual]}\n-> {classes[m.predicted]} {m.confidence:.2f}" for m in mistakes],
            REPORTS / "misclassified.png",
            title="most confident mistakes (true -> predicted)",
        )
    else:
        image_grid(
            np.zeros((0, *image_shape), np.uint8),
            [],
            REPORTS / "misclassified.png",
            title="no mistakes on the validation set",
        )


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


if __name__ == "__main__":
    cli.run(main)
