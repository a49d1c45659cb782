"""Stage `evaluate`: score the model on the validation shards and draw the error analysis.

metrics/eval.json (MAP@3, top-1, top-3, rows: scalars only, so `dvc metrics show` fits a terminal) of
the first ``evaluate.max_rows`` validation drawings (a uniform sample: the shards are shuffled),
reports/ (per-class accuracy worst first, confusion data for `dvc plots`, most-confused pairs, a
gallery of mistakes, confidence histograms). The split is streamed in batches, so memory does not
grow with its size (see doodle.evaluate.analysis); reports/confusion.csv holds the first
doodle.evaluate.analysis.SAMPLE_ROWS validation drawings (a uniform sample: the shards are shuffled).
reports/embedding.png and reports/activations.png show what the network sees (doodle.evaluate.views,
params section ``evaluate``): its penultimate features of the first ``evaluate.embedding_samples``
validation drawings in 2-D, and its first conv layers' activations for a few of them.

A stroke-sequence model (``train.model: stroke_rnn``...) reads the same validation drawings encoded
from the validation shards by its own encoder (doodle.evaluate.analysis.shard_inputs); the reports
still show their cached images.
"""

from __future__ import annotations

from tqdm import tqdm

from doodle.batches.cache import open_split, read_cache_manifest, require_same_render
from doodle.core.metrics import chance_map_at_3, near_chance
from doodle.core.params import load_section, read_params
from doodle.core.paths import CACHE, MODEL, REPORTS, SHARDS
from doodle.drawing.raster import RenderParams
from doodle.evaluate.analysis import analyse_split, iter_batches, model_inputs
from doodle.evaluate.params import EvaluateParams
from doodle.evaluate.reports import write_reports
from doodle.evaluate.views import write_views
from doodle.predict.inference import TrainedModel, predict_in_batches
from stages import cli

BATCH = 512


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    cfg = load_section(EvaluateParams, "evaluate", read_params(args.params))
    model = TrainedModel.load(MODEL)
    cache = read_cache_manifest(CACHE)
    val = open_split(CACHE, "val")
    if model.kind == "image":
        require_same_render(cache, model.encoder, CACHE, f"{MODEL}'s render params")
    # what the model reads of them: the first evaluate.max_rows
    inputs = model_inputs(model.kind, model.encoder, cache, SHARDS, BATCH, cfg.max_rows)
    classes = model.classes
    scored = val.rows if cfg.max_rows is None else min(val.rows, cfg.max_rows)
    with tqdm(total=scored, unit="img", desc="evaluate", disable=args.quiet) as bar:
        predict = lambda x: predict_in_batches(model.model, x, BATCH)  # noqa: E731
        result = analyse_split(val, predict, len(classes), BATCH, bar.update, inputs and inputs(), cfg.max_rows)
    metrics = result.metrics()
    cli.write_metrics("eval", metrics, headline=("val_map_at_3", "val_top1", "val_top3"))
    write_reports(result, classes, RenderParams(**cache["render"]).shape(), REPORTS)
    ranked, accuracy = result.ranked_classes(), result.per_class_accuracy()
    print(
        f"evaluate: val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_top1']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} on {result.rows:,} drawings"
        + (f" (the first {result.rows:,} of {val.rows:,}: evaluate.max_rows)" if result.rows < val.rows else "")
        + "; worst: "
        + ", ".join(f"{classes[i]} {accuracy[i]:.2f}" for i in ranked[:5])
    )
    if near_chance(metrics["val_map_at_3"], len(classes)):
        print(
            f"evaluate: WARNING: val MAP@3 {metrics['val_map_at_3']:.4f} is near chance "
            f"({chance_map_at_3(len(classes)):.4f} for {len(classes)} classes): the model has not learned; "
            "train longer (train.epochs, train.steps_per_epoch, train.time_budget_s) or check the recipe"
        )
    seen = write_views(model.model, inputs() if inputs else iter_batches(val, BATCH), classes, cfg, REPORTS)
    embedding = (
        f"embedding skipped ({seen['embedding_skipped']})"
        if seen["embedding_skipped"]
        else f"{seen['embedding']} embedding of {seen['embedding_points']:,} drawings "
        f"({seen['embedding_seconds']:.1f}s)"
    )
    print(
        f"evaluate: {embedding}, activations of {seen['activation_layers']} conv layers "
        f"-> {REPORTS / 'embedding.png'}, {REPORTS / 'activations.png'}"
    )


if __name__ == "__main__":
    cli.run(main)
