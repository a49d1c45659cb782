"""The evaluate stage's files under reports/: per-class accuracy worst first, the most-confused
pairs and a confusion sample for `dvc plots`, the confidence histograms and the gallery of the most
confident mistakes, all from one streamed :class:`~doodle.evaluate.analysis.ErrorAnalysis`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doodle.core.csvfiles import write_csv
from doodle.core.plots import group_histograms, guarded, image_grid

from .analysis import ErrorAnalysis


def write_reports(result: ErrorAnalysis, classes: list[str], image_shape: tuple, reports: Path) -> None:
    """Every file of the error analysis under ``reports``."""
    reports.mkdir(exist_ok=True)
    counts, accuracy = result.class_counts, result.per_class_accuracy()
    write_csv(
        reports / "per_class_accuracy.csv",
        ["class", "accuracy", "n"],
        ((classes[i], round(float(accuracy[i]), 4), int(counts[i])) for i in result.ranked_classes()),
    )
    write_csv(  # pair: the label of the bar `dvc plots show` draws for each pair (dvc.yaml)
        reports / "confused_pairs.csv",
        ["actual", "predicted", "count", "pair"],
        ((classes[a], classes[b], c, f"{classes[a]} -> {classes[b]}") for a, b, c in result.confused_pairs()),
    )
    actual, predicted = result.confusion_sample()
    write_csv(
        reports / "confusion.csv",
        ["actual", "predicted"],
        ((classes[a], classes[b]) for a, b in zip(actual, predicted)),
    )
    # the pictures are optional: an error in one leaves a picture saying why (the numbers are written)
    guarded("confidence", reports / "confidence.png", lambda: _draw_confidence(result, reports / "confidence.png"))
    path = reports / "misclassified.png"
    guarded("mistakes", path, lambda: _draw_mistakes(result, classes, image_shape, path))


def _draw_confidence(result: ErrorAnalysis, path: Path) -> None:
    group_histograms(  # one panel a group, each normalised: the few wrong ones stay visible
        result.confidence,
        result.bins,
        path,
        "top-1 probability",
        "confidence of correct vs wrong predictions (each panel: % of its own group)",
        totals=result.confidence_rows,
    )


def _draw_mistakes(result: ErrorAnalysis, classes: list[str], image_shape: tuple, path: Path) -> None:
    mistakes = result.mistakes
    if mistakes:
        image_grid(
            np.stack([m.image for m in mistakes]),
            [f"{classes[m.actual]}\n-> {classes[m.predicted]} {m.confidence:.2f}" for m in mistakes],
            path,
            title="most confident mistakes (true -> predicted)",
        )
    else:
        image_grid(np.zeros((0, *image_shape), np.uint8), [], path, title="no mistakes on the validation set")
