"""Shuffle and shard a data source into parquet files, in memory that does not grow with the input.

Pass 1 streams every class file block by block, cleans it (:mod:`doodle.sources`), and appends
each row to the Arrow spill file of its shard, chosen by a stable hash of its key_id, so a drawing
lands in the same shard whatever else is in the input. Pass 2 orders each shard by a second,
seeded hash of key_id. Sorting by a uniform random key *is* a uniform shuffle; it makes the order
independent of file order, and puts duplicate key_ids next to each other, so they are found in
shard-sized memory. A shard larger than ``memory_mb`` is first split into key-range buckets
that are each sorted alone; concatenated in order, they equal the full sort.

Both passes run in ``workers`` forked processes (class files in pass 1, shards in pass 2), and
the result is byte-identical for any number of them. Memory is bounded by workers x
(``block_mb``, ``memory_mb``); see :func:`_system_memory_pool` and :func:`_limit_heap_retention`
for the two allocator settings that keep it from creeping up as files go by.
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .params import require
from .sources import ROW_REASONS, TRAIN_COLUMNS, Source, clean_block, iter_class_blocks
from .strokes import DRAWING_REASONS, STROKE_COLUMNS, STROKE_FIELDS, StrokeBatch

log = logging.getLogger(__name__)

SPILL_SCHEMA = pa.schema(
    [
        ("key_id", pa.int64()),
        ("label", pa.int16()),
        ("countrycode", pa.string()),
        ("recognized", pa.bool_()),
        ("timestamp", pa.string()),
        *STROKE_FIELDS,
        ("seq", pa.int64()),
    ]
)
SHARD_SCHEMA = pa.schema(
    [
        ("key_id", pa.int64()),
        ("word", pa.dictionary(pa.int16(), pa.string())),
        ("label", pa.int16()),
        ("countrycode", pa.string()),
        ("recognized", pa.bool_()),
        ("timestamp", pa.string()),
        *STROKE_FIELDS,
    ]
)
QUARANTINE_COLUMNS = ["word", "key_id", "reason", "drawing"]
TIMING_KEYS = ("workers", "seconds", "read_seconds", "shuffle_write_seconds", "rows_per_s")


@dataclass
class ShardParams:
    """params.yaml section ``shard``."""

    count: int = 8
    seed: int = 2018
    val_shards: list[int] = field(default_factory=lambda: [-1])
    max_per_class: int | None = None
    recognized_only: bool = False
    row_group_rows: int = 50_000
    memory_mb: float = 8
    block_mb: int = 2
    workers: int | None = None  # processes for both passes; None = one per CPU core

    def validate(self, where: str = "shard") -> None:
        require(self.count >= 1, f"{where}.count", f"must be >= 1, got {self.count}")
        require(bool(self.val_shards), f"{where}.val_shards", "name at least one validation shard")
        for v in self.val_shards:
            require(
                -self.count <= v < self.count,
                f"{where}.val_shards",
                f"shard {v} is out of range for count={self.count}",
            )
        require(
            len(self.resolved_val_shards()) < self.count or self.count == 1,
            f"{where}.val_shards",
            "leaves no training shard",
        )
        require(
            self.max_per_class is None or self.max_per_class > 0,
            f"{where}.max_per_class",
            "must be a positive number or null",
        )
        require(
            self.row_group_rows > 0 and self.memory_mb > 0 and self.block_mb > 0,
            where,
            "row_group_rows, memory_mb and block_mb must be positive",
        )
        require(
            self.workers is None or self.workers >= 1,
            f"{where}.workers",
            f"must be >= 1 or null (one per core), got {self.workers}",
        )

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def resolved_val_shards(self) -> list[int]:
        return sorted({v % self.count for v in self.val_shards})


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-mixed, platform-stable uint64 hash."""
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard_of(key_id: np.ndarray, count: int) -> np.ndarray:
    """The shard of each key_id: depends on the key_id and ``count`` only."""
    return (mix64(key_id) % np.uint64(count)).astype(np.int64)


def order_key(key_id: np.ndarray, seed: int) -> np.ndarray:
    """Seeded uniform random key of each key_id; sorting by it shuffles a shard."""
    return mix64(mix64(key_id) ^ mix64(np.array([seed], np.uint64))[0])


def shard_name(i: int) -> str:
    return f"shard-{i:03d}.parquet"


class _Quarantine:
    """Rejected rows with their reason, in a CSV a person can open (one part file per worker task,
    joined in input order at the end so the file is the same whatever the number of workers)."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None
        self.counts: dict[str, int] = {}

    def add(self, rows) -> None:
        for row in rows:
            if self.fh is None:
                self.fh = self.path.open("w", newline="")
                self.writer = csv.writer(self.fh)
            self.counts[row[2]] = self.counts.get(row[2], 0) + 1
            self.writer.writerow(row)

    def close(self) -> dict[str, int]:
        if self.fh is not None:
            self.fh.close()
        return self.counts


def _strokes_json(batch: StrokeBatch, i: int) -> str:
    return json.dumps([[list(sx), list(sy)] for sx, sy in batch.drawing(i)], separators=(",", ":"))


@dataclass
class _Job:
    """What every worker needs to know (forked, so nothing is pickled)."""

    source: Source
    cfg: ShardParams
    classes: list[str]
    spill_dir: Path
    parts_dir: Path


def write_shards(source: Source, out_dir: str | Path, cfg: ShardParams, progress: bool = True) -> dict:
    """Run both passes; write shards, classes.csv, manifest.json, stats.json, quarantine.csv.
    Returns the stats plus the timings (:data:`TIMING_KEYS`), which stats.json leaves out.

    Pass 1 reads the class files in ``cfg.workers`` processes, each with its own spill file per
    shard; pass 2 shuffles and writes the shards in the same number of processes. The output
    does not depend on the number of workers: rows carry their input position (``seq``), and
    every order is decided by key hashes and ``seq``, never by which worker was faster."""
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
    if out.exists():
        shutil.rmtree(out)
    job = _Job(source, cfg, source.classes, out / "_spill", out / "_parts")
    job.spill_dir.mkdir(parents=True)
    job.parts_dir.mkdir()
    workers = max(1, min(cfg.resolved_workers(), len(job.classes)))
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

    # ---- pass 1: stream, clean, route to shard spills
    total_bytes = sum(p.stat().st_size for p in source.class_files.values())
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="shard: read", disable=not progress) as bar:
        for file_stats in _run_pass1(job, workers, bar.update):
            stats["rows_in"] += file_stats["rows_in"]
            stats["filtered_unrecognized"] += file_stats["filtered_unrecognized"]
            stats["truncated_classes"] += file_stats["truncated"]
            if file_stats["rows_in"] == 0:
                name = source.class_files[job.classes[file_stats["index"]]]
                stats["empty_class_files"].append(name.name)
                log.warning("class file %s is empty", name)
            for r, c in file_stats["rejected"].items():
                rejected[r] = rejected.get(r, 0) + c
    stats["empty_class_files"].sort()
    t1 = time.perf_counter()

    # ---- pass 2: order each shard by its seeded key, drop duplicates, write parquet
    rows_per_shard = [0] * cfg.count
    per_class = np.zeros(len(job.classes), np.int64)
    with tqdm(total=cfg.count, desc="shard: shuffle+write", disable=not progress) as bar:
        for shard_stats in _map(_write_shard, job, range(cfg.count), workers):
            rows_per_shard[shard_stats["shard"]] = shard_stats["rows_out"]
            per_class += shard_stats["per_class"]
            for r, c in shard_stats["rejected"].items():
                rejected[r] = rejected.get(r, 0) + c
            bar.update(1)
    shutil.rmtree(job.spill_dir)
    _join_quarantine(job, out / "quarantine.csv")

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
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with (out / "classes.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "word"])
        w.writerows(enumerate(job.classes))

    seconds = time.perf_counter() - t0
    stats["rows_out"] = int(sum(rows_per_shard))
    stats["rejected"] = {r: rejected.get(r, 0) for r in [*DRAWING_REASONS.values(), *ROW_REASONS]}
    stats["rejected_total"] = int(sum(rejected.values()))
    stats["rows_per_shard"] = rows_per_shard
    stats["rows_per_class"] = {w: int(c) for w, c in zip(job.classes, per_class)}
    stats["seconds"] = round(seconds, 3)
    stats["read_seconds"] = round(t1 - t0, 3)
    stats["shuffle_write_seconds"] = round(time.perf_counter() - t1, 3)
    stats["rows_per_s"] = round(stats["rows_in"] / seconds, 1) if seconds else 0.0
    # Timings stay out of the output folder: identical input and params give identical bytes,
    # so DVC sees nothing new downstream when only the speed changed.
    (out / "stats.json").write_text(
        json.dumps({k: v for k, v in stats.items() if k not in TIMING_KEYS}, indent=2) + "\n"
    )
    return stats


# --------------------------------------------------------------------------- pass 1
def _shard_file(job: _Job, index: int, writers: dict, spill_prefix: str, on_bytes) -> dict:
    """Clean one class file and append its rows to the spills; return its counts."""
    cfg, word = job.cfg, job.classes[index]
    path = job.source.class_files[word]
    quarantine = _Quarantine(job.parts_dir / f"read-{index:05d}.csv")
    out = {"index": index, "rows_in": 0, "filtered_unrecognized": 0, "truncated": 0}
    taken, done_bytes, file_bytes = 0, 0, path.stat().st_size
    seq = index << 40  # input position: file, then row; the first of duplicate key_ids wins
    for table in iter_class_blocks(job.source, word, cfg.block_mb << 20):
        out["rows_in"] += table.num_rows
        step = min(table.nbytes, file_bytes - done_bytes)
        done_bytes += step
        on_bytes(step)
        block = clean_block(table, word)
        quarantine.add(block.rejected)
        keep = np.ones(len(block), bool)
        if cfg.recognized_only:
            keep &= block.recognized
            out["filtered_unrecognized"] += int((~block.recognized).sum())
        if cfg.max_per_class is not None:
            keep &= np.cumsum(keep) <= cfg.max_per_class - taken
        n_keep = int(keep.sum())
        taken += n_keep
        if n_keep:
            _route(block, keep, index, seq, cfg, writers, job.spill_dir, spill_prefix)
        seq += len(block)
        if cfg.max_per_class is not None and taken >= cfg.max_per_class:
            out["truncated"] = 1
            break
    on_bytes(file_bytes - done_bytes)
    out["rejected"] = quarantine.close()
    return out


def _read_files(job: _Job, indices, worker: int, on_bytes):
    """Shard the class files ``indices`` (any iterable) into this reader's own spill files,
    closed at the end; yield each file's counts."""
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for index in indices:
            yield _shard_file(job, index, writers, f"w{worker:03d}", on_bytes)
    finally:
        for w in writers.values():
            w.close()


def _pass1_worker(job: _Job, worker: int, tasks, results) -> None:
    """A pass-1 process: class files from ``tasks`` until None; messages to ``results``."""
    _limit_heap_retention()
    try:
        for file_stats in _read_files(job, iter(tasks.get, None), worker, lambda n: results.put(("bytes", n))):
            results.put(("file", file_stats))
        results.put(("done", worker))
    except BaseException as exc:  # report, then let the parent raise it
        results.put(("error", _picklable(exc), traceback.format_exc()))


def _limit_heap_retention() -> None:
    """In a worker process: make glibc return freed block buffers to the OS.

    glibc raises its mmap threshold to the size of the largest freed buffer (up to 32 MB), after
    which block-sized buffers come from the heap and stay resident when freed: measured, a
    reader's RSS settled ~60 MB higher with 2 MB blocks than with 0.3 MB ones, and this brings
    it back to the same level for any block size. Only in forked workers, whose malloc state is
    their own; elsewhere (other C libraries) it does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed at 1 MB, which also stops the dynamic raise
        libc.mallopt(-1, 2 << 20)  # M_TRIM_THRESHOLD: give back free heap tops over 2 MB
    except (OSError, AttributeError):
        pass


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(str(exc))


def _run_pass1(job: _Job, workers: int, on_bytes):
    """Yield each class file's counts as it finishes (in any order)."""
    order = sorted(range(len(job.classes)), key=lambda i: -job.source.class_files[job.classes[i]].stat().st_size)
    if workers == 1:
        yield from _read_files(job, order, 0, on_bytes)
        return
    _warm_up()
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    for index in order:  # biggest files first: the last ones to finish are short
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_pass1_worker, args=(job, w, tasks, results), daemon=True) for w in range(workers)]
    for proc in procs:
        proc.start()
    running = set(range(workers))
    try:
        while running:
            try:
                msg = results.get(timeout=1.0)
            except queue.Empty:
                dead = [w for w in running if procs[w].exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"shard: reader process {dead[0]} died (exit code "
                        f"{procs[dead[0]].exitcode}; out of memory? lower shard.workers "
                        f"or shard.block_mb)"
                    ) from None
                continue
            if msg[0] == "bytes":
                on_bytes(msg[1])
            elif msg[0] == "file":
                yield msg[1]
            elif msg[0] == "done":
                running.discard(msg[1])
            else:
                log.error("shard: a reader process failed:\n%s", msg[2])
                raise msg[1]
    finally:
        for proc in procs:
            if proc.is_alive() and running:
                proc.terminate()
            proc.join()


def _warm_up() -> None:
    """Load the compiled parser (numba, ~0.7 s) once in the parent, so forked workers inherit
    it instead of each loading it again."""
    one = pa.table({c: pa.array([v]) for c, v in zip(TRAIN_COLUMNS, ["US", "[[[0],[0]]]", "1", "True", "", "w"])})
    clean_block(one, "w")


def _route(block, keep, index, seq0, cfg, writers, spill_dir, prefix) -> None:
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
    for s, part in _grouped(batch, shard_of(key_id, cfg.count), cfg.count):
        w = writers.get(s)
        if w is None:
            w = writers[s] = pa.ipc.new_stream(spill_dir / f"{s:03d}-{prefix}.arrow", SPILL_SCHEMA)
        w.write_batch(part)


def _grouped(data, group: np.ndarray, groups: int):
    """(group, rows of ``data`` in that group) for each non-empty group, input order kept within
    a group: one gather of the whole table or batch, then zero-copy slices."""
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    data = data.take(pa.array(order))
    for g in np.flatnonzero(np.diff(bounds)):
        yield int(g), data.slice(bounds[g], bounds[g + 1] - bounds[g])


# --------------------------------------------------------------------------- pass 2
def _map(fn, job: _Job, items, workers: int):
    """``fn(job, item)`` for each item, in ``workers`` forked processes; results as they finish."""
    items = list(items)
    if workers == 1 or len(items) == 1:
        yield from (fn(job, i) for i in items)
        return
    global _FORK_JOB
    _FORK_JOB = job
    try:
        with mp.get_context("fork").Pool(min(workers, len(items)), initializer=_limit_heap_retention) as pool:
            yield from pool.imap_unordered(partial(_call_with_fork_job, fn), items)
    finally:
        _FORK_JOB = None


_FORK_JOB: _Job | None = None


def _call_with_fork_job(fn, item):
    return fn(_FORK_JOB, item)


def _write_shard(job: _Job, shard: int) -> dict:
    """Shuffle one shard's spills, drop duplicate key_ids, write its parquet file."""
    cfg, classes = job.cfg, job.classes
    quarantine = _Quarantine(job.parts_dir / f"dups-{shard:05d}.csv")
    per_class = np.zeros(len(classes), np.int64)
    dictionary = pa.array(classes, pa.string())
    spills = sorted(job.spill_dir.glob(f"{shard:03d}-*.arrow"))
    n_out = 0
    with pq.ParquetWriter(
        job.spill_dir.parent / shard_name(shard),
        SHARD_SCHEMA,
        compression="snappy",
        use_dictionary=["word", "countrycode"],
        write_statistics=["key_id", "label"],
    ) as writer:
        for table, order in _ordered_buckets(spills, cfg.seed, int(cfg.memory_mb * 2**20)):
            order = _drop_duplicates(table, order, quarantine, classes)
            labels = table["label"].to_numpy()
            per_class += np.bincount(labels[order], minlength=len(classes))
            # gather one row group at a time: memory holds the bucket plus one row group
            for a in range(0, len(order), cfg.row_group_rows):
                part = table.take(pa.array(order[a : a + cfg.row_group_rows]))
                writer.write_table(
                    pa.table(
                        {
                            "key_id": part["key_id"],
                            "word": pa.DictionaryArray.from_arrays(part["label"].combine_chunks(), dictionary),
                            "label": part["label"],
                            "countrycode": part["countrycode"],
                            "recognized": part["recognized"],
                            "timestamp": part["timestamp"],
                            **{c: part[c] for c in STROKE_COLUMNS},
                        },
                        schema=SHARD_SCHEMA,
                    )
                )
            n_out += len(order)
            del table, order, part  # before the next bucket is read: one bucket in memory at a time
    return {"shard": shard, "rows_out": n_out, "per_class": per_class, "rejected": quarantine.close()}


def _join_quarantine(job: _Job, path: Path) -> None:
    """quarantine.csv: read rejects in class-file order, then duplicates in shard order."""
    parts = sorted(job.parts_dir.glob("read-*.csv")) + sorted(job.parts_dir.glob("dups-*.csv"))
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerow(QUARANTINE_COLUMNS)
        for part in parts:
            with part.open(newline="") as src:
                shutil.copyfileobj(src, fh)
    shutil.rmtree(job.parts_dir)


def _ordered_buckets(spills: list[Path], seed: int, budget_bytes: int):
    """Yield a shard's rows (from all its spill files) bucket by bucket, each bucket within
    ``budget_bytes``, as (table, order): ``order`` sorts the table by (order key, key_id, seq)."""
    size = sum(p.stat().st_size for p in spills)
    k = max(1, -(-size // max(budget_bytes, 1)))
    if k == 1:
        buckets = [spills]
    else:  # split by key range into buckets that each fit the memory budget
        stem = spills[0].name.split("-")[0]
        paths = [spills[0].with_name(f"{stem}.b{b:04d}.arrow") for b in range(k)]
        writers = [pa.ipc.new_stream(p, SPILL_SCHEMA) for p in paths]
        for spill in spills:
            for table in _coalesced(spill, budget_bytes // 4):
                key = order_key(table["key_id"].to_numpy(), seed)
                bucket = (((key >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)).astype(np.int64)
                for b, part in _grouped(table, bucket, k):
                    writers[b].write_table(part)
                del table, part  # a table always has rows, so at least one bucket was written
            spill.unlink()
        for w in writers:
            w.close()
        buckets = [[p] for p in paths]
    for files in buckets:
        tables = []
        for p in files:
            with pa.ipc.open_stream(pa.OSFile(str(p))) as reader:
                tables.append(reader.read_all())
            p.unlink()
        table = pa.concat_tables(tables) if tables else None
        del tables
        if table is None or table.num_rows == 0:
            continue
        key_id = table["key_id"].to_numpy()
        yield table, np.lexsort((table["seq"].to_numpy(), key_id, order_key(key_id, seed)))
        del table


def _coalesced(spill: Path, chunk_bytes: int):
    """A spill file's rows as tables of about ``chunk_bytes`` (its batches are small: one per
    input block and shard), read, not memory-mapped, so RSS stays bounded."""
    pending, size = [], 0
    with pa.ipc.open_stream(pa.OSFile(str(spill))) as reader:
        for batch in reader:
            pending.append(batch)
            size += batch.nbytes
            if size >= chunk_bytes:
                yield pa.Table.from_batches(pending)
                pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _drop_duplicates(table: pa.Table, order: np.ndarray, quarantine: _Quarantine, classes) -> np.ndarray:
    """``order`` without repeats of a key_id (kept: the first in input order, which the sort put
    first); the repeats go to the quarantine."""
    key_id = table["key_id"].to_numpy()[order]
    dup = np.zeros(len(order), bool)
    dup[1:] = key_id[1:] == key_id[:-1]
    if not dup.any():
        return order
    gone = order[dup]
    strokes = StrokeBatch.from_arrow(*(table[c] for c in STROKE_COLUMNS)).take(gone)
    labels = table["label"].to_numpy()[gone]
    quarantine.add(
        (classes[int(lab)], str(int(k)), "duplicate_key_id", _strokes_json(strokes, j))
        for j, (lab, k) in enumerate(zip(labels, key_id[dup]))
    )
    return order[~dup]


# --------------------------------------------------------------------------- reading back
def read_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the shard stage first (dvc repro shard)")
    return json.loads(path.read_text())


def read_classes(path: str | Path) -> list[str]:
    """A classes.csv (index,word) as a list indexed by label."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["word"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def iter_shard_batches(path: str | Path, limit: int | None = None):
    """(labels int64, key_ids int64, StrokeBatch) per row group of a shard, up to ``limit`` rows."""
    pf = pq.ParquetFile(path)
    done = 0
    for g in range(pf.num_row_groups):
        if limit is not None and done >= limit:
            return
        t = pf.read_row_group(g, columns=["key_id", "label", *STROKE_COLUMNS])
        if limit is not None and done + t.num_rows > limit:
            t = t.slice(0, limit - done)
        done += t.num_rows
        yield (
            t["label"].to_numpy().astype(np.int64),
            t["key_id"].to_numpy(),
            StrokeBatch.from_arrow(*(t[c] for c in STROKE_COLUMNS)),
        )
