"""Training throughput of the three model families on whatever Keras backend runs here (JAX on a GPU
machine without TensorFlow): the model alone, and the full path from the stroke shards.

    bash benchmarks/gpu.sh [--steps 40] [--batch 512]          # on a GPU machine (installs carried wheels)
    JAX_PLATFORMS=cpu bash benchmarks/gpu.sh --steps 2 --batch 16   # the same script on a CPU

Writes a small data set with the project's own code (the procedural doodles, sharded), then for each
configuration (:data:`CONFIGS`: the recipes ``ours``, ``baseline-mobilenet`` (MobileNet at 64 px),
``ours-strokes`` (the 1-D convolutional stroke model) and ``ours-strokes-rnn`` (its LSTM sibling))
compiles the model as the train stage does (:func:`doodle.train.compile.compiled_model`, mixed
precision on a GPU) and times ``model.fit`` for
``--steps`` steps after ``--warmup`` steps (compilation) on:

- ``model``: one fixed batch, again every step: what the model alone trains at (the batch still
  goes from host to device each step, as every batch does);
- ``pipeline``: the train stage's input, drawn on the fly from the shards with the recipe's stroke
  augmentation (:class:`doodle.batches.strokes.StrokeStream`, read through
  :class:`doodle.train.feed.StreamBatches`, or tf.data under TensorFlow).

Prints a line per configuration and, last, one JSON object:
``{"backend", "device", "batch", "steps", "models": {NAME: {"model_images_per_s", "pipeline_images_per_s",
"input_share", "input_images_per_s", "params", "compile_s"}}, "seconds"}``; ``input_images_per_s`` is
the stream making its batches alone, with no model. ``--read-ahead 0 2`` adds
``pipeline_images_per_s_by_read_ahead``: the full path with batches made in the training loop (0) and
made ahead on a thread of their own (doodle.train.feed.READ_AHEAD is the stage's);
``--input-processes 2 4`` adds ``pipeline_images_per_s_by_input_processes``: the same batches made in
that many processes (``train.input_processes``). Images are drawings for the sequence models.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from doodle.batches.batching import Stream

#: Name in the output -> recipe (doodle.recipes) it trains.
CONFIGS = {
    "ours": "ours",
    "mobilenet-64": "baseline-mobilenet",
    "sequence": "ours-strokes",
    "sequence-rnn": "ours-strokes-rnn",
}


def write_data(workdir: Path, per_class: int) -> Path:
    """The procedural doodles (16 classes), ``per_class`` each, sharded into 4 shards; the shard dir."""
    from doodle.sample.generate import SampleParams, generate
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    sample, shards = workdir / "sample", workdir / "shards"
    if not (shards / "manifest.json").is_file():
        generate(sample, SampleParams(train_per_class=per_class, test_per_class=1, corrupt_fraction=0.0))
        write_shards(resolve_source(sample, "auto"), shards, ShardParams(count=4, val_shards=[-1]), progress=False)
    return shards


def recipe_config(recipe: str):
    """(train params, input encoder) of a recipe, as the train stage reads them from params.yaml."""
    from benchmarks.common import REPO
    from doodle import recipes
    from doodle.core.params import load_section, read_params
    from doodle.render.params import RenderSection
    from doodle.train.params import TrainParams

    params = recipes.apply(recipes.RECIPES[recipe], read_params(REPO / "params.yaml"))
    cfg = load_section(TrainParams, "train", params)
    return cfg, cfg.encoder(load_section(RenderSection, "render", params))


class FixedBatch(Stream):
    """``steps`` times the same batch: the model's speed without any input work."""

    def __init__(self, x: np.ndarray, y: np.ndarray, steps: int):
        self.x, self.y, self.steps, self.batch_size = x, y, steps, len(y)
        self.image_shape, self.dtype = x.shape[1:], x.dtype

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int = 0, own: bool = True):
        for _ in range(self.steps):
            yield self.x, self.y


def timed_fit(model, stream, steps: int, warmup: int, read_ahead: int | None = None) -> float:
    """Images/s of ``model.fit`` over ``steps`` steps of ``stream``, after ``warmup`` steps (compilation),
    read as the train stage reads it; ``read_ahead``: batches made ahead on their own thread (without
    tf.data; None: the stage's default, doodle.train.feed.READ_AHEAD)."""
    from doodle.train.feed import READ_AHEAD, StreamBatches, fit_data, uses_tf_data
    from doodle.train.strategy import Worker

    def data():
        if uses_tf_data():
            return fit_data(None, Worker(), stream)
        return StreamBatches(stream, read_ahead=READ_AHEAD if read_ahead is None else read_ahead)

    batch = stream.batch_size
    model.fit(data(), steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
    t0 = time.perf_counter()
    model.fit(data(), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    return steps * batch / (time.perf_counter() - t0)


def input_rate(stream, steps: int) -> float:
    """Images/s of making the batches alone (the stream's numpy batches, no model)."""
    batches = stream.epoch(1)
    next(batches)  # the first batch starts the drawing threads and reads the first row groups
    t0 = time.perf_counter()
    for _ in itertools.islice(batches, steps):
        pass
    return steps * stream.batch_size / (time.perf_counter() - t0)


def measure(
    name: str,
    shards: Path,
    classes: int,
    batch: int,
    steps: int,
    warmup: int,
    read_ahead: tuple[int, ...] = (),
    input_processes: tuple[int, ...] = (),
) -> dict:
    from doodle.batches.processes import ProcessStream
    from doodle.batches.strokes import StrokeStream, shard_paths
    from doodle.train.compile import compiled_model

    cfg, encoder = recipe_config(CONFIGS[name])

    def make_stream():
        return StrokeStream(
            shard_paths(shards, "train"),
            encoder,
            batch,
            shuffle=True,
            seed=0,
            steps=steps + warmup,
            augment=cfg.stroke_augment_params,
        )

    stream = make_stream()
    t0 = time.perf_counter()
    model = compiled_model(cfg, encoder.shape(), classes, steps)
    x, y = next(stream.epoch(0))
    model.train_on_batch(x, y)  # compiles the training step
    compile_s = time.perf_counter() - t0
    alone = timed_fit(model, FixedBatch(x, y, steps + warmup), steps, warmup)
    full = timed_fit(model, stream, steps, warmup)
    by_read_ahead = {str(n): round(timed_fit(model, stream, steps, warmup, n), 1) for n in read_ahead}
    by_processes = {}
    for n in input_processes:  # the same batches, made in n processes (train.input_processes)
        made = ProcessStream(make_stream(), n)
        by_processes[str(n)] = round(timed_fit(model, made, steps, warmup), 1)
        made.close()
    result = {
        "model_images_per_s": round(alone, 1),
        "pipeline_images_per_s": round(full, 1),
        "input_share": round(max(0.0, 1 - full / alone), 3),  # of the full path's time, what the input adds
        "input_images_per_s": round(input_rate(stream, steps), 1),
        **({"pipeline_images_per_s_by_read_ahead": by_read_ahead} if by_read_ahead else {}),
        **({"pipeline_images_per_s_by_input_processes": by_processes} if by_processes else {}),
        "params": model.count_params(),
        "compile_s": round(compile_s, 1),
        "input_shape": list(encoder.shape()),
    }
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="where the data set is written")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per model and input")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--per-class", type=int, default=2000, help="drawings per class in the data set (16 classes)")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--json", type=Path, help="also write the results here, after each model")
    ap.add_argument(
        "--read-ahead",
        type=int,
        nargs="*",
        default=[],
        help="also time the full path with these read-ahead depths (0: batches made in the training loop)",
    )
    ap.add_argument(
        "--input-processes",
        type=int,
        nargs="*",
        default=[],
        help="also time the full path with the batches made in this many processes (train.input_processes)",
    )
    args = ap.parse_args(argv)

    import keras

    from benchmarks.common import last_line
    from doodle.shard.format import read_manifest
    from doodle.train.strategy import device_strategy

    t0 = time.perf_counter()
    shards = write_data(args.workdir, args.per_class)
    classes = read_manifest(shards)["num_classes"]
    _, device = device_strategy(mixed_precision=True)
    print(f"gpu benchmark: keras {keras.__version__}, {device}; batch {args.batch}, {args.steps} steps", flush=True)
    results = {}
    for name in args.models:
        r = results[name] = measure(
            name,
            shards,
            classes,
            args.batch,
            args.steps,
            args.warmup,
            tuple(args.read_ahead),
            tuple(args.input_processes),
        )
        print(
            f"  {name:13s} {tuple(r['input_shape'])!s:15s} model alone {r['model_images_per_s']:10,.0f}/s   "
            f"full path {r['pipeline_images_per_s']:10,.0f}/s   input alone {r['input_images_per_s']:10,.0f}/s   "
            f"({r['params']:,} params, compiled in "
            f"{r['compile_s']:.0f}s)"
            + "".join(
                f"   read-ahead {n}: {v:,.0f}/s" for n, v in r.get("pipeline_images_per_s_by_read_ahead", {}).items()
            ),
            flush=True,
        )
        summary = {
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "device": device,
            "batch": args.batch,
            "steps": args.steps,
            "models": results,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if args.json:
            args.json.write_text(json.dumps(summary) + "\n")
    last_line(summary)


if __name__ == "__main__":
    main()
