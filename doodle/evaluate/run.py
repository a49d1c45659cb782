"""The evaluate stage's run: the blend predict made (reports/blend.json: the models, their files and
weights, and whether predict averaged in the mirrored drawings, ``predict.tta_flip``) scored on the
validation drawings the same way, each model alone too, and the blend's error analysis.

Each model reads the validation drawings as it was trained to: an image model drawn as the cache
reads the cache's images; a stroke model, or an image model with its own render params, reads the
same drawings encoded from their shards by its own encoder, one stream per distinct encoder, checked to
be the same drawings batch by batch (doodle.evaluate.analysis.aligned_batches). The split is
streamed, so memory does not grow with its size. The reports (confusion, mistakes, confidence) are
the blend's; the views (embedding, activations) are of the first model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doodle.batches.cache import open_split
from doodle.core.metrics import chance_map_at_3, near_chance
from doodle.core.report import StageResult
from doodle.drawing.raster import RenderParams
from doodle.predict.inference import TrainedModel, model_probs_of
from doodle.predict.members import read_blend_record
from doodle.render.format import read_cache_manifest, require_same_render
from doodle.shard.format import read_manifest

from .analysis import ErrorAnalysis, aligned_batches, iter_batches, shard_batches
from .params import EvaluateParams
from .reports import write_reports
from .views import write_views

BATCH = 512


@dataclass(frozen=True)
class EvaluateFiles:
    """Where evaluate reads and writes (the stage passes the project's, doodle.core.paths)."""

    cache: Path
    shards: Path
    blend: Path  # reports/blend.json, written by predict
    reports: Path


@dataclass
class Scored:
    """One model of the blend: its name, files (averaged equally) and weight."""

    name: str
    models: list[TrainedModel]
    weight: float


def run(cfg: EvaluateParams, files: EvaluateFiles, progress: bool = True) -> StageResult:
    """Score the blend (and each model alone when there are several) on the first
    ``evaluate.max_rows`` validation drawings; write the reports and views."""
    record, tta_flip = read_blend_record(files.blend)
    blend = [Scored(n, [TrainedModel.load(f) for f in paths], w) for n, paths, w in record]
    first = blend[0].models[0]
    classes = first.classes
    cache = read_cache_manifest(files.cache)
    val = open_split(files.cache, "val")
    drawn_as_cache = RenderParams(**cache["render"])
    own = [m for s in blend for m in s.models if m.encoder.draws_images and m.encoder != drawn_as_cache]
    if own and read_manifest(files.shards).get("content") == "images":  # no strokes to draw their images from
        require_same_render(cache, own[0].encoder, files.cache, f"{own[0].path}'s render params")
    encoders = {m.encoder for s in blend for m in s.models} - {drawn_as_cache}
    streams = {e: shard_batches(e, cache, files.shards, BATCH, cfg.max_rows) for e in encoders}
    result = ErrorAnalysis(len(classes))
    alone = {s.name: ErrorAnalysis(len(classes), mistakes=0, sample_rows=0) for s in blend} if len(blend) > 1 else {}
    scored = val.rows if cfg.max_rows is None else min(val.rows, cfg.max_rows)
    with tqdm(total=scored, unit="img", desc="evaluate", disable=not progress) as bar:
        for images, labels, xs in aligned_batches(val, BATCH, cfg.max_rows, streams):
            total = 0.0
            for s in blend:
                inputs = [xs.get(m.encoder, images) for m in s.models]  # as predict blended: mirrored too if it did
                probs = np.mean([model_probs_of(m, x, BATCH, tta_flip) for m, x in zip(s.models, inputs)], 0)
                if alone:
                    alone[s.name].update(labels, probs, images)
                total = total + s.weight * probs
            result.update(labels, total, images)
            bar.update(len(labels))
    metrics = result.metrics()
    if alone:
        metrics["models"] = {name: a.map_at_3 for name, a in alone.items()}
    write_reports(result, classes, drawn_as_cache.shape(), files.reports)
    inputs = shard_batches(first.encoder, cache, files.shards, BATCH) if first.encoder in streams else None
    seen = write_views(first.model, inputs or iter_batches(val, BATCH), classes, cfg, files.reports)
    lines = [summary(metrics, result, classes, val.rows, alone), views_line(seen, first, files.reports)]
    if near_chance(metrics["val_map_at_3"], len(classes)):
        lines.insert(1, chance_warning(metrics["val_map_at_3"], len(classes)))
    headline = ("val_map_at_3", "val_top1", "val_top3", "models")
    return StageResult(metrics, headline, "\n".join(lines))


def summary(metrics: dict, result: ErrorAnalysis, classes: list[str], split_rows: int, alone: dict) -> str:
    """The stage's line: the blend's figures, each model's alone, the worst classes."""
    ranked, accuracy = result.ranked_classes(), result.per_class_accuracy()
    what = f"blend of {len(alone)} models" if alone else "model"
    each = ", ".join(f"{name} {a.map_at_3:.4f}" for name, a in alone.items())
    return (
        f"evaluate: {what}: val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_top1']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} on {result.rows:,} drawings"
        + (f" (the first {result.rows:,} of {split_rows:,}: evaluate.max_rows)" if result.rows < split_rows else "")
        + (f"; alone: {each}" if alone else "")
        + "; worst: "
        + ", ".join(f"{classes[i]} {accuracy[i]:.2f}" for i in ranked[:5])
    )


def chance_warning(value: float, classes: int) -> str:
    return (
        f"evaluate: WARNING: val MAP@3 {value:.4f} is near chance ({chance_map_at_3(classes):.4f} for {classes} "
        "classes): the model has not learned; train longer (train.epochs, train.steps_per_epoch, "
        "train.time_budget_s) or check the recipe"
    )


def views_line(seen: dict, model: TrainedModel, reports: Path) -> str:
    embedding = (
        f"embedding skipped ({seen['embedding_skipped']})"
        if seen["embedding_skipped"]
        else f"{seen['embedding']} embedding of {seen['embedding_points']:,} drawings "
        f"({seen['embedding_seconds']:.1f}s)"
    )
    return (
        f"evaluate: {embedding} by {model.path}, activations of {seen['activation_layers']} conv layers "
        f"-> {reports / 'embedding.png'}, {reports / 'activations.png'}"
    )
