"""Benchmark the training input pipeline alone (no model), against the public baseline's generator.

    python -m benchmarks.input_pipeline [--images 230000] [--workdir /tmp/doodle-bench-input-N]
    python -m benchmarks.input_pipeline --shards-memory [--shard-counts 10 100] [--shard-rows 50000]

Builds shards and a render cache of real drawings (replicated to --images, 64x64x1; 230k leaves
~201k in the 7 training shards) with the project's own stages' code, then measures images/s of
(a) BatchStream (numpy, full block+buffer shuffle) and (b) the tf.data pipeline the train stage
uses, both batch 680, over memory-mapped files; (c) on the fly: StrokeStream rendering the
training shards at 64x64, 1 and 3 channels, with every stroke augmentation on, alone (numpy) and
through the same tf.data wrapper; (e) sequences: the same StrokeStream with the stroke-sequence
encoder (SequenceParams, 128 points x 3 channels plain and augmented, x 5 with the position
channels augmented), numpy and tf.data; and (d) a reference generator in the public-kernel style: pandas CSV chunks,
ast.literal_eval, cv2 drawing per image. Last line: one JSON object; ``on_the_fly_per_s`` maps each
configuration to its tf.data rate and ``on_the_fly_numpy_per_s`` to the stream's own (images/s),
``sequences_per_s`` and ``sequences_numpy_per_s`` the same for sequences. The load average is
printed with each number (this machine is shared). ``--only-sequences`` measures (e) alone over
the shards of an earlier run (or builds them), skipping the cache, the images and the reference.

``--shards-memory`` writes shards of the same rows per shard (so 10x the shards is 10x the
rows) and reads one full shuffled, augmented epoch of each set in a fresh process, reporting
its peak RSS: it stays flat when the shard count (and the data) grows tenfold.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import last_line, real_rows, replicate_kaggle
from benchmarks.reference import draw_cv2

#: Every stroke augmentation on, at moderate strength.
AUGMENT = {"scale": 0.15, "aspect": 0.15, "shift": 0.1, "rotation": 15.0, "shear": 0.15, "stroke_dropout": 0.1}


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


def load() -> str:
    return "load {:.2f}/{:.2f}/{:.2f}".format(*os.getloadavg())


def on_the_fly(shard_dir: Path, batch: int, steps: int) -> tuple[dict, dict]:
    """Images/s of StrokeStream over the training shards, 64x64 with 1 and 3 channels, every
    augmentation on: (tf.data rates, numpy rates), keyed by configuration."""
    from doodle.batches.batching import tf_dataset
    from doodle.batches.strokes import StrokeStream, shard_paths
    from doodle.drawing.augment import StrokeAugmentParams
    from doodle.drawing.raster import RenderParams

    tf_rates, np_rates = {}, {}
    for channels in (1, 3):
        name = f"64x64x{channels}_augmented"
        stream = StrokeStream(
            shard_paths(shard_dir, "train"),
            RenderParams(64, channels=channels),
            batch,
            shuffle=True,
            seed=0,
            augment=StrokeAugmentParams(**AUGMENT),
        )
        np_rates[name] = round(rate(stream.forever(), steps))
        print(f"on the fly {name} (numpy):   {np_rates[name]:>10,} images/s over {stream.rows:,} drawings ({load()})")
        tf_rates[name] = round(rate(iter(tf_dataset(stream, repeat=True)), steps))
        print(f"on the fly {name} (tf.data): {tf_rates[name]:>10,} images/s ({load()})")
    return tf_rates, np_rates


def sequences(shard_dir: Path, batch: int, steps: int) -> tuple[dict, dict]:
    """Sequences/s of StrokeStream with the stroke-sequence encoder over the training shards,
    128 points x 3 channels without and with every augmentation on, and x 5 (with the position
    channels, as the ``ours-strokes`` recipe) augmented: (tf.data rates, numpy rates)."""
    from doodle.batches.batching import tf_dataset
    from doodle.batches.strokes import StrokeStream, shard_paths
    from doodle.drawing.augment import StrokeAugmentParams
    from doodle.drawing.sequence import SequenceParams

    tf_rates, np_rates = {}, {}
    configs = [(SequenceParams(128), None), (SequenceParams(128), StrokeAugmentParams(**AUGMENT))]
    configs.append((SequenceParams(128, position=True), StrokeAugmentParams(**AUGMENT)))  # ours-strokes' input
    for encoder, augment in configs:
        name = "seq{}x{}".format(*encoder.shape()) + ("_augmented" if augment else "")
        stream = StrokeStream(shard_paths(shard_dir, "train"), encoder, batch, shuffle=True, seed=0, augment=augment)
        np_rates[name] = round(rate(stream.forever(), steps))
        print(
            f"on the fly {name} (numpy):   {np_rates[name]:>10,} sequences/s over {stream.rows:,} drawings ({load()})"
        )
        tf_rates[name] = round(rate(iter(tf_dataset(stream, repeat=True)), steps))
        print(f"on the fly {name} (tf.data): {tf_rates[name]:>10,} sequences/s ({load()})")
    return tf_rates, np_rates


def only_sequences(work: Path, images: int, batch: int) -> None:
    """``--only-sequences``: (e) alone, over the shards in ``work`` (built if missing)."""
    from doodle.batches.strokes import shard_paths
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    if not (work / "shards" / "manifest.json").exists():
        replicate_kaggle(work / "in", images)
        write_shards(resolve_source(work / "in"), work / "shards", ShardParams(count=8, val_shards=[-1]), False)
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(p).num_rows for p in shard_paths(work / "shards", "train"))
    seq_tf, seq_np = sequences(work / "shards", batch, min(rows // batch - 1, 200))
    last_line({"batch": batch, "sequences_per_s": seq_tf, "sequences_numpy_per_s": seq_np, "augment": AUGMENT})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=230_000)
    p.add_argument("--workdir", default=None, help="default /tmp/doodle-bench-input-<images>")
    p.add_argument("--batch", type=int, default=680)
    p.add_argument("--shards-memory", action="store_true", help="peak RSS of the stream at several shard counts")
    p.add_argument("--shard-counts", type=int, nargs="+", default=[10, 100])
    p.add_argument("--shard-rows", type=int, default=50_000, help="rows per shard (--shards-memory)")
    p.add_argument("--row-group-rows", type=int, default=25_000, help="parquet row group size (--shards-memory)")
    p.add_argument("--only-sequences", action="store_true", help="only the sequence encoder's rates (e)")
    p.add_argument("--stream-rss", default=None, help=argparse.SUPPRESS)  # the child of --shards-memory
    a = p.parse_args()
    if a.stream_rss:
        return stream_rss(Path(a.stream_rss), a.batch)
    if a.shards_memory:
        return shards_memory(a)
    work = Path(a.workdir or f"/tmp/doodle-bench-input-{a.images}")
    if a.only_sequences:
        return only_sequences(work, a.images, a.batch)
    from doodle.batches.cache import open_split
    from doodle.render.params import RenderSection
    from doodle.render.run import build_cache
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    if not (work / "cache" / "manifest.json").exists():
        t0 = time.perf_counter()
        replicate_kaggle(work / "in", a.images)
        write_shards(resolve_source(work / "in"), work / "shards", ShardParams(count=8, val_shards=[-1]), False)
        build_cache(work / "shards", work / "cache", RenderSection(size=64, train_shards=None), progress=False)
        print(f"built a {a.images:,}-image cache in {time.perf_counter() - t0:.0f}s")
    split = open_split(work / "cache", "train")
    from doodle.batches.batching import tf_dataset
    from doodle.batches.stream import BatchStream

    stream = BatchStream(split, a.batch, shuffle=True, seed=0)
    steps = min(len(stream) - 1, 200)
    ours_np = rate(stream.forever(), steps)
    print(f"BatchStream (numpy):   {ours_np:>10,.0f} images/s over {split.rows:,} cached images ({load()})")
    ds = tf_dataset(stream, repeat=True)
    ours_tf = rate(iter(ds), steps)
    print(f"tf.data (train stage): {ours_tf:>10,.0f} images/s ({load()})")
    fly_tf, fly_np = on_the_fly(work / "shards", a.batch, steps)
    seq_tf, seq_np = sequences(work / "shards", a.batch, steps)
    files = sorted((work / "in" / "train_simplified").glob("*.csv"))
    ref = rate(reference_generator(files, a.batch), 5, warmup=1)
    print(f"reference generator:   {ref:>10,.0f} images/s (pandas + ast.literal_eval + cv2)")
    last_line(
        {
            "images": split.rows,
            "batch": a.batch,
            "ours_per_s": round(ours_tf),
            "ours_numpy_per_s": round(ours_np),
            "on_the_fly_per_s": fly_tf,
            "on_the_fly_numpy_per_s": fly_np,
            "on_the_fly_augment": AUGMENT,
            "sequences_per_s": seq_tf,
            "sequences_numpy_per_s": seq_np,
            "reference_per_s": round(ref),
            "ratio": round(ours_tf / ref, 1),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        }
    )


# --------------------------------------------------------------------------- --shards-memory
def write_synthetic_shards(out: Path, count: int, rows: int, row_group_rows: int) -> None:
    """``count`` shards of ``rows`` real drawings each (drawn at random with new key_ids), in the
    shard stage's layout (SHARD_SCHEMA, row groups of ``row_group_rows``) and with its manifest;
    the last shard is the validation shard. Written directly: the point is reading them back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from doodle.drawing.parse import parse_drawings
    from doodle.shard.format import SHARD_SCHEMA, shard_name

    src = real_rows()
    words = sorted(src)
    texts = [r[1] for w in words for r in src[w]]
    labels = np.repeat(np.arange(len(words), dtype=np.int16), [len(src[w]) for w in words])
    parsed = parse_drawings(texts)
    strokes, labels = parsed.strokes, labels[parsed.valid]
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        idx = rng.integers(0, len(labels), rows)
        x, y, lens = strokes.take(idx).to_arrow()
        lab = pa.array(labels[idx])
        table = pa.table(
            {
                "key_id": pa.array(np.arange(rows, dtype=np.int64) + i * rows),
                "word": pa.DictionaryArray.from_arrays(lab, pa.array(words)),
                "label": lab,
                "countrycode": pa.array(["US"] * rows),
                "recognized": pa.array(np.ones(rows, bool)),
                "timestamp": pa.array(["2017-03-01 00:00:00.00000 UTC"] * rows),
                "x": x,
                "y": y,
                "stroke_len": lens,
            },
            schema=SHARD_SCHEMA,
        )
        pq.write_table(table, out / shard_name(i), row_group_size=row_group_rows, compression="snappy")
    manifest = {
        "count": count,
        "files": [shard_name(i) for i in range(count)],
        "val_shards": [count - 1],
        "train_shards": list(range(count - 1)),
        "rows_per_shard": [rows] * count,
        "num_classes": len(words),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def stream_rss(shard_dir: Path, batch: int) -> None:
    """(Child process) one full shuffled, augmented epoch over ``shard_dir``'s training shards at
    64x64x1; prints its peak RSS and its RSS after the first batch and at the end, as JSON."""
    from doodle.batches.strokes import StrokeStream, shard_paths
    from doodle.drawing.augment import StrokeAugmentParams
    from doodle.drawing.raster import RenderParams

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    stream = StrokeStream(
        shard_paths(shard_dir, "train"), RenderParams(64), batch, True, augment=StrokeAugmentParams(**AUGMENT)
    )
    t0 = time.perf_counter()
    samples = []  # RSS at each tenth of the epoch: flat, not creeping up shard after shard
    n = 0
    for step, (x, _) in enumerate(stream.epoch(0)):
        n += len(x)
        if step % max(len(stream) // 10, 1) == 0:
            samples.append(round(rss_mb()))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = {
        "shards": len(shard_paths(shard_dir, "train")),
        "rows": stream.rows,
        "images": n,
        "seconds": round(seconds, 1),
        "images_per_s": round(n / seconds),
        "rss_first_batch_mb": samples[0],
        "rss_end_mb": round(rss_mb()),
        "rss_tenths_mb": samples,
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(info))


def shards_memory(a) -> None:
    work = Path(a.workdir or "/tmp/doodle-bench-shards-memory")
    results = {}
    for count in a.shard_counts:
        d = work / f"{count}x{a.shard_rows}-rg{a.row_group_rows}"
        if not (d / "manifest.json").exists():
            t0 = time.perf_counter()
            write_synthetic_shards(d, count, a.shard_rows, a.row_group_rows)
            print(f"wrote {count} shards of {a.shard_rows:,} rows in {time.perf_counter() - t0:.0f}s")
        before = load()
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.input_pipeline", "--stream-rss", str(d), "--batch", str(a.batch)],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(child.stdout.strip().splitlines()[-1])
        results[str(count)] = info
        print(
            f"{count:>4} shards ({info['shards']} train, {info['rows']:,} rows): one epoch of "
            f"{info['images']:,} images in {info['seconds']}s ({info['images_per_s']:,}/s); RSS after the first batch "
            f"{info['rss_first_batch_mb']:.0f} MB, at the end {info['rss_end_mb']:.0f} MB, peak "
            f"{info['peak_rss_mb']:.0f} MB ({before}); at each tenth: {info['rss_tenths_mb']}"
        )
    peaks = [r["peak_rss_mb"] for r in results.values()]
    last_line(
        {
            "shard_rows": a.shard_rows,
            "row_group_rows": a.row_group_rows,
            "batch": a.batch,
            "stream_peak_rss_mb": {k: r["peak_rss_mb"] for k, r in results.items()},
            "peak_ratio": round(peaks[-1] / peaks[0], 3),
            "runs": results,
        }
    )


if __name__ == "__main__":
    main()
