"""Benchmark the training input pipeline alone (no model), against the public baseline's generator.

    python -m benchmarks.input_pipeline [--images 230000] [--workdir /tmp/doodle-bench-input-N]

Builds a render cache of real drawings (replicated to --images, 64x64x1; 230k leaves ~201k in
the 7 training shards) with the project's own
stages' code, then measures images/s of (a) BatchStream (numpy, full block+buffer shuffle) and
(b) the tf.data pipeline the train stage uses, both batch 680, over memory-mapped files; and
(c) a reference generator in the public-kernel style: pandas CSV chunks, ast.literal_eval,
cv2 drawing per image. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np

from benchmarks.common import last_line, replicate_kaggle
from benchmarks.reference import draw_cv2


def reference_generator(csv_files, batch):
    import pandas as pd

    while True:
        for f in csv_files:
            for df in pd.read_csv(f, chunksize=batch):
                strokes = df["drawing"].apply(ast.literal_eval)
                x = np.zeros((len(df), 64, 64, 1), np.uint8)
                for i, s in enumerate(strokes.values):
                    x[i, :, :, 0] = draw_cv2(s, size=64)
                yield x, df["word"].values


def rate(it, batches, warmup=10):
    for _ in range(warmup):  # start-up: thread pools, prefetch autotuning, first reads
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=230_000)
    p.add_argument("--workdir", default=None, help="default /tmp/doodle-bench-input-<images>")
    p.add_argument("--batch", type=int, default=680)
    a = p.parse_args()
    work = Path(a.workdir or f"/tmp/doodle-bench-input-{a.images}")
    from doodle.cache import CacheParams, build_cache, open_split
    from doodle.sharding import ShardParams, write_shards
    from doodle.sources import resolve_source

    if not (work / "cache" / "manifest.json").exists():
        t0 = time.perf_counter()
        replicate_kaggle(work / "in", a.images)
        write_shards(resolve_source(work / "in"), work / "shards", ShardParams(count=8, val_shards=[-1]), False)
        build_cache(work / "shards", work / "cache", CacheParams(size=64, train_shards=None), progress=False)
        print(f"built a {a.images:,}-image cache in {time.perf_counter() - t0:.0f}s")
    split = open_split(work / "cache", "train")
    from doodle.datasets import BatchStream, tf_dataset

    stream = BatchStream(split, a.batch, shuffle=True, seed=0)
    steps = min(len(stream) - 1, 200)
    ours_np = rate(stream.forever(), steps)
    print(f"BatchStream (numpy):   {ours_np:>10,.0f} images/s over {split.rows:,} cached images")
    ds = tf_dataset(stream, repeat=True)
    ours_tf = rate(iter(ds), steps)
    print(f"tf.data (train stage): {ours_tf:>10,.0f} images/s")
    files = sorted((work / "in" / "train_simplified").glob("*.csv"))
    ref = rate(reference_generator(files, a.batch), 5, warmup=1)
    print(f"reference generator:   {ref:>10,.0f} images/s (pandas + ast.literal_eval + cv2)")
    last_line(
        {
            "images": split.rows,
            "batch": a.batch,
            "ours_per_s": round(ours_tf),
            "ours_numpy_per_s": round(ours_np),
            "reference_per_s": round(ref),
            "ratio": round(ours_tf / ref, 1),
        }
    )


if __name__ == "__main__":
    main()
