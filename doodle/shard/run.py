"""The shard stage: shuffle and shard a data source into parquet, in memory that does not grow
with the input.

Pass 1 streams every class file block by block, cleans it (:mod:`doodle.sources.quickdraw`), and appends
each row to the Arrow spill file of its shard, chosen by a stable hash of its key_id
(:func:`doodle.shard.format.shard_of`). Pass 2 (:mod:`doodle.shard.shuffle`) orders each shard by a second,
seeded hash and drops repeated key_ids.

Pixel sources (:mod:`doodle.sources.pixels`) take the same two passes with image rows
(:mod:`doodle.shard.pixels`, :func:`doodle.shard.format.image_layout`): their rows are checked, not
parsed, and their manifest says ``"content": "images"`` and the ``image_shape``.

Both passes run in ``workers`` forked processes (class files in pass 1, shards in pass 2), and
the result is byte-identical for any number of them: rows carry their input position
(``seq``), and every order is decided by key hashes and ``seq``, never by which worker was
faster. Memory is bounded by workers x (``block_mb``, ``memory_mb``); see
:func:`_system_memory_pool` and :func:`doodle.core.malloc.limit_heap_retention` for the two
allocator settings that keep it from creeping up as files go by.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from doodle.core.csvfiles import write_csv
from doodle.core.disk import require_free, same_filesystem
from doodle.core.malloc import limit_heap_retention
from doodle.core.params import require
from doodle.core.report import StageResult
from doodle.core.workers import fork_map
from doodle.drawing.parse import DRAWING_REASONS
from doodle.sources.folder import Source
from doodle.sources.pixels import PIXEL_REASONS, check_class_keys, image_shape
from doodle.sources.quickdraw import MALFORMED_ROW, ROW_REASONS, TRAIN_COLUMNS, clean_block, iter_class_blocks

from .format import SPILL_SCHEMA, STROKES, Layout, Quarantine, image_layout, join_quarantine, shard_name, shard_of
from .params import ShardParams
from .pixels import shard_pixel_file
from .shuffle import ShuffleSpec, Spills, write_shard

log = logging.getLogger(__name__)

TIMING_KEYS = ("workers", "seconds", "read_seconds", "shuffle_write_seconds", "rows_per_s", "spill_bytes", "spill_dir")
#: Disk that pass 1's spill files and the finished shards take per byte of input, with a margin over
#: what Kaggle's CSVs measured (spills 0.35, shards 0.25, at 2.5 and 24.7 GB of CSV: docs/performance.md);
#: ndjson input is larger per drawing, so these bound it too. Pixel sources spill about their own size.
SPILL_PER_INPUT_BYTE = {"strokes": 0.40, "pixels": 1.10}
SHARDS_PER_INPUT_BYTE = {"strokes": 0.28, "pixels": 1.05}
#: The fewest input bytes a row takes, to bound how much of a file ``shard.max_per_class`` reads.
MIN_ROW_BYTES = {"strokes": 100, "pixels": 784}
WORKER_HINT = "lower shard.workers or shard.block_mb"


@dataclass
class _Job:
    """What every pass-1 worker needs to know (forked, so nothing is pickled)."""

    source: Source
    cfg: ShardParams
    classes: list[str]
    spill_dir: Path
    parts_dir: Path
    layout: Layout = STROKES
    image_shape: tuple[int, int] | None = None  # pixel sources


def run(source: Source, out_dir: Path, cfg: ShardParams, progress: bool = True, log=print) -> StageResult:
    """The shard stage: :func:`write_shards`, its figures (reports/shard.json; metrics/shard.json: rows
    kept and rejected) and its line; the rejected rows' reasons are in ``out_dir``/quarantine.csv."""
    content = "image shards" if source.pixels else "shards"
    workers = min(cfg.resolved_workers(), len(source.input_files()))
    log(
        f"shard: {source.kind} source {source.root} with {len(source.classes)} classes -> "
        f"{cfg.count} {content} in {out_dir}, {workers} worker process(es)"
    )
    stats = write_shards(source, out_dir, cfg, progress)
    values = {k: stats[k] for k in ("rows_in", "rows_out", "rejected_total", "seconds", "rows_per_s", "workers")}
    values |= {k: stats[k] for k in ("read_seconds", "shuffle_write_seconds", "spill_bytes")}  # the two passes
    bad = ", ".join(f"{k} {v}" for k, v in stats["rejected"].items() if v) or "none"
    line = (
        f"shard: {stats['rows_in']:,} rows in, {stats['rows_out']:,} out, {stats['rejected_total']:,} "
        f"rejected ({bad}; see {Path(out_dir) / 'quarantine.csv'}), {stats['seconds']:.1f}s, "
        f"{stats['rows_per_s']:,.0f} rows/s"
    )
    return StageResult(values, ("rows_out", "rejected_total"), line)


def write_shards(source: Source, out_dir: str | Path, cfg: ShardParams, progress: bool = True) -> dict:
    """Run both passes; write shards, classes.csv, manifest.json, stats.json, quarantine.csv.
    Returns the stats plus the timings (:data:`TIMING_KEYS`), which stats.json leaves out."""
    with _system_memory_pool():
        return _write_shards(source, Path(out_dir), cfg, progress)


@contextmanager
def _system_memory_pool():
    """Arrow's default pool (jemalloc) keeps freed pages of this stage's many short-lived block
    buffers: measured, a reader's RSS kept rising file after file (+70 MB over 340 files),
    while with the system allocator it levels off after a few files. Worker processes
    inherit the pool when forked; the caller's pool is restored after."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _write_shards(source: Source, out: Path, cfg: ShardParams, progress: bool) -> dict:
    t0 = time.perf_counter()
    job = _start_job(source, out, cfg)
    files = source.input_files()
    workers = max(1, min(cfg.resolved_workers(), len(files)))
    stats = {
        "rows_in": 0,
        "rows_out": 0,
        "filtered_unrecognized": 0,
        "empty_class_files": [],
        "skipped_files": list(source.skipped),
        "truncated_classes": 0,
        "workers": workers,
    }
    rejected: dict[str, int] = {}
    try:
        _pass1(job, files, workers, progress, stats, rejected)
        stats["spill_bytes"] = sum(p.stat().st_size for p in job.spill_dir.iterdir())
        stats["spill_dir"] = str(job.spill_dir)
        t1 = time.perf_counter()
        rows_per_shard, per_class = _pass2(job, workers, progress, rejected)
    finally:
        shutil.rmtree(job.spill_dir, ignore_errors=True)  # outside the output folder too: never left behind
    # read rejects in class-file order, then duplicates in shard order
    parts = sorted(job.parts_dir.glob("read-*.csv")) + sorted(job.parts_dir.glob("dups-*.csv"))
    join_quarantine(parts, out / "quarantine.csv")
    shutil.rmtree(job.parts_dir)

    seconds = time.perf_counter() - t0
    stats["rows_out"] = int(sum(rows_per_shard))
    reasons = PIXEL_REASONS if source.pixels else [*DRAWING_REASONS.values(), *ROW_REASONS]
    stats["rejected"] = {r: rejected.get(r, 0) for r in reasons}
    stats["rejected_total"] = int(sum(rejected.values()))
    stats["rows_per_shard"] = rows_per_shard
    stats["rows_per_class"] = {w: int(c) for w, c in zip(job.classes, per_class)}
    stats["seconds"] = round(seconds, 3)
    stats["read_seconds"] = round(t1 - t0, 3)
    stats["shuffle_write_seconds"] = round(time.perf_counter() - t1, 3)
    stats["rows_per_s"] = round(stats["rows_in"] / seconds, 1) if seconds else 0.0
    # Timings stay out of the output folder: identical input and params give identical bytes,
    # so DVC sees nothing new downstream when only the speed changed.
    stats_file = {k: v for k, v in stats.items() if k not in TIMING_KEYS}
    (out / "stats.json").write_text(json.dumps(stats_file, indent=2) + "\n")
    _write_manifest(out, job, rows_per_shard)  # last: what every later stage opens first (a killed run has none)
    return stats


def _start_job(source: Source, out: Path, cfg: ShardParams) -> _Job:
    """An empty ``out`` with its scratch folders, and what the workers of both passes share;
    refuses to start without the disk both passes need (:func:`require_disk`)."""
    if out.exists():
        shutil.rmtree(out)
    spill = spill_folder(out, cfg.spill_dir)
    shutil.rmtree(spill, ignore_errors=True)  # what a killed run left
    require_disk(source, cfg, spill, out)
    job = _Job(source, cfg, source.classes, spill, out / "_parts")
    if source.pixels:
        require(not cfg.recognized_only, "shard.recognized_only", f"{source.kind} sources have no recognized flag")
        job.image_shape = image_shape(source.kind, source.input_files())
        job.layout = image_layout(job.image_shape)
        check_class_keys(job.classes)
    job.spill_dir.mkdir(parents=True)
    job.parts_dir.mkdir(parents=True)
    return job


def spill_folder(out: Path, spill_dir: str | None) -> Path:
    """Where pass 1 spills: ``out/_spill``, or with ``shard.spill_dir`` a folder there named after
    ``out`` (two projects sharing /tmp never share spills)."""
    if spill_dir is None:
        return out / "_spill"
    tag = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10]
    return Path(spill_dir) / f"doodle-spill-{tag}"


def require_disk(source: Source, cfg: ShardParams, spill: Path, out: Path) -> None:
    """Refuse to start when the spills (about :data:`SPILL_PER_INPUT_BYTE` of the input, all there at
    the end of pass 1) and the shards (:data:`SHARDS_PER_INPUT_BYTE`) would not fit, before reading
    anything. Pass 2 deletes each shard's spills as it writes the shard, so they peak together only
    on one file system."""
    content = "pixels" if source.pixels else "strokes"
    read = 0.0
    for path in source.input_files():
        size = path.stat().st_size
        if cfg.max_per_class is not None and source.kind != "digits":  # at most max_per_class rows of a file
            size = min(size, cfg.max_per_class * MIN_ROW_BYTES[content])
        read += size
    spills, shards = read * SPILL_PER_INPUT_BYTE[content], read * SHARDS_PER_INPUT_BYTE[content]
    hint = "free some, or set shard.spill_dir to a folder on another disk (e.g. /tmp)"
    if same_filesystem(spill, out):
        require_free(
            out, spills + shards, f"the shard stage's spill files and shards ({read / 1e9:.1f} GB of input)", hint
        )
    else:
        require_free(spill, spills, f"the shard stage's spill files ({read / 1e9:.1f} GB of input)", "free some")
        require_free(out, shards, f"the shards ({read / 1e9:.1f} GB of input)", "free some")


def _pass1(job: _Job, files: list[Path], workers: int, progress: bool, stats: dict, rejected: dict) -> None:
    """Stream, clean and route every row to its shard's spills, biggest files first (the last
    to finish are then short); counts go into ``stats`` and ``rejected``."""
    order = sorted(range(len(files)), key=lambda i: -files[i].stat().st_size)
    total_bytes = sum(p.stat().st_size for p in files)
    if workers > 1 and not job.source.pixels:
        _warm_up()
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="shard: read", disable=not progress) as bar:
        read = fork_map(
            lambda w, files, tick: _read_files(job, files, w, tick),
            order,
            workers,
            progress=bar.update,
            setup=limit_heap_retention,
            what="shard reader",
            hint=WORKER_HINT,
        )
        for file_stats in read:
            stats["rows_in"] += file_stats["rows_in"]
            stats["filtered_unrecognized"] += file_stats["filtered_unrecognized"]
            stats["truncated_classes"] += file_stats["truncated"]
            if file_stats["rows_in"] == 0:
                name = files[file_stats["index"]]
                stats["empty_class_files"].append(name.name)
                log.warning("class file %s is empty", name)
            _add(rejected, file_stats["rejected"])
    stats["empty_class_files"].sort()


def _pass2(job: _Job, workers: int, progress: bool, rejected: dict) -> tuple[list[int], np.ndarray]:
    """Order each shard by its seeded key, drop duplicates, write parquet; (rows per shard, rows
    per class). The spills are removed after."""
    cfg = job.cfg
    spec = ShuffleSpec(
        job.classes,
        job.spill_dir,
        job.parts_dir,
        cfg.seed,
        int(cfg.memory_mb * 2**20),
        cfg.row_group_rows,
        job.layout,
        out_dir=job.parts_dir.parent,
    )
    rows_per_shard = [0] * cfg.count
    per_class = np.zeros(len(job.classes), np.int64)
    with tqdm(total=cfg.count, desc="shard: shuffle+write", disable=not progress) as bar:
        shuffled = fork_map(
            lambda w, shards, tick: (write_shard(spec, s) for s in shards),
            range(cfg.count),
            workers,
            setup=limit_heap_retention,
            what="shard writer",
            hint="lower shard.workers or shard.memory_mb",
        )
        for shard_stats in shuffled:
            rows_per_shard[shard_stats["shard"]] = shard_stats["rows_out"]
            per_class += shard_stats["per_class"]
            _add(rejected, shard_stats["rejected"])
            bar.update(1)
    return rows_per_shard, per_class


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        total[reason] = total.get(reason, 0) + n


def _write_manifest(out: Path, job: _Job, rows_per_shard: list[int]) -> None:
    """manifest.json (what every later stage reads: the files, the split, the rows) and classes.csv."""
    cfg, source = job.cfg, job.source
    val = cfg.resolved_val_shards()
    manifest = {
        "count": cfg.count,
        "seed": cfg.seed,
        "source": str(source.root),
        "source_kind": source.kind,
        "files": [shard_name(i) for i in range(cfg.count)],
        "val_shards": val,
        "train_shards": [i for i in range(cfg.count) if i not in val],
        "rows_per_shard": rows_per_shard,
        "num_classes": len(job.classes),
    }
    if source.pixels:  # stroke manifests stay as they were: their shards are byte-identical
        manifest.update(content="images", image_shape=list(job.image_shape))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_csv(out / "classes.csv", ["index", "word"], enumerate(job.classes))


# --------------------------------------------------------------------------- pass 1
def _read_files(job: _Job, indices, worker: int, on_bytes):
    """Shard the class files ``indices`` (any iterable) into this reader's own spill files,
    closed at the end; yield each file's counts."""
    spills = Spills(job.spill_dir, f"w{worker:03d}", job.cfg.count)
    try:
        shard_file = shard_pixel_file if job.image_shape is not None else _shard_file
        for index in indices:
            yield shard_file(job, index, spills, on_bytes)
    finally:
        spills.close()


def _shard_file(job: _Job, index: int, spills: Spills, on_bytes) -> dict:
    """Clean one class file and append its rows to the spills; return its counts."""
    cfg, word = job.cfg, job.classes[index]
    path = job.source.class_files[word]
    quarantine = Quarantine(job.parts_dir / f"read-{index:05d}.csv")
    out = {"index": index, "rows_in": 0, "filtered_unrecognized": 0, "truncated": 0}
    taken, done_bytes, file_bytes = 0, 0, path.stat().st_size
    seq = index << 40  # input position: file, then row; the first of duplicate key_ids wins

    def quarantine_bad_lines():
        bad = blocks.take_bad_rows()
        out["rows_in"] += len(bad)
        quarantine.add((word, "", MALFORMED_ROW, text) for text in bad)

    blocks = iter_class_blocks(job.source, word, cfg.block_mb << 20)
    for table in blocks:
        out["rows_in"] += table.num_rows
        step = min(table.nbytes, file_bytes - done_bytes)
        done_bytes += step
        on_bytes(step)
        block = clean_block(table, word)
        quarantine.add(block.rejected)
        quarantine_bad_lines()
        keep = np.ones(len(block), bool)
        if cfg.recognized_only:
            keep &= block.recognized
            out["filtered_unrecognized"] += int((~block.recognized).sum())
        if cfg.max_per_class is not None:
            keep &= np.cumsum(keep) <= cfg.max_per_class - taken
        n_keep = int(keep.sum())
        taken += n_keep
        if n_keep:
            _route(block, keep, index, seq, cfg, spills)
        seq += len(block)
        if cfg.max_per_class is not None and taken >= cfg.max_per_class:
            out["truncated"] = 1
            break
    else:
        quarantine_bad_lines()  # a bad last line is reported once its block is done
    on_bytes(file_bytes - done_bytes)
    out["rejected"] = quarantine.close()
    return out


def _warm_up() -> None:
    """Load the compiled parser (numba, ~0.7 s) once in the parent, so forked workers inherit
    it instead of each loading it again."""
    one = pa.table({c: pa.array([v]) for c, v in zip(TRAIN_COLUMNS, ["US", "[[[0],[0]]]", "1", "True", "", "w"])})
    clean_block(one, "w")


def _route(block, keep, index, seq0, cfg, spills: Spills) -> None:
    idx = np.flatnonzero(keep)
    strokes = block.strokes.take(idx) if len(idx) != len(block) else block.strokes
    key_id = block.key_id[idx]
    batch = pa.record_batch(
        [
            pa.array(key_id),
            pa.array(np.full(len(idx), index, np.int16)),
            block.countrycode.take(pa.array(idx)),
            pa.array(block.recognized[idx]),
            block.timestamp.take(pa.array(idx)),
            *strokes.to_arrow(),
            pa.array(seq0 + idx),
        ],
        schema=SPILL_SCHEMA,
    )
    spills.add(batch, shard_of(key_id, cfg.count))
