"""Shuffle and shard a data source into parquet files, in memory that does not grow with the input.

Pass 1 streams every class file block by block, cleans it (:mod:`doodle.sources`), and appends
each row to the Arrow spill file of its shard, chosen by a stable hash of its key_id, so a drawing
lands in the same shard whatever else is in the input. Pass 2 orders each shard by a second,
seeded hash of key_id. Sorting by a uniform random key *is* a uniform shuffle; it makes the order
independent of file order, and puts duplicate key_ids next to each other, so they are found in
shard-sized memory. A shard larger than ``memory_mb`` is first split into key-range buckets
that are each sorted alone; concatenated in order, they equal the full sort.
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .params import require
from .sources import ROW_REASONS, Source, clean_block, iter_class_blocks
from .strokes import DRAWING_REASONS, STROKE_TYPE, StrokeBatch

log = logging.getLogger(__name__)

SPILL_SCHEMA = pa.schema([
    ("key_id", pa.int64()), ("label", pa.int16()), ("countrycode", pa.string()),
    ("recognized", pa.bool_()), ("timestamp", pa.string()),
    ("x", STROKE_TYPE), ("y", STROKE_TYPE), ("seq", pa.int64()),
])
SHARD_SCHEMA = pa.schema([
    ("key_id", pa.int64()), ("word", pa.dictionary(pa.int16(), pa.string())), ("label", pa.int16()),
    ("countrycode", pa.string()), ("recognized", pa.bool_()), ("timestamp", pa.string()),
    ("x", STROKE_TYPE), ("y", STROKE_TYPE),
])
QUARANTINE_COLUMNS = ["word", "key_id", "reason", "drawing"]


@dataclass
class ShardParams:
    """params.yaml section ``shard``."""

    count: int = 8
    seed: int = 2018
    val_shards: list[int] = field(default_factory=lambda: [-1])
    max_per_class: int | None = None
    recognized_only: bool = False
    row_group_rows: int = 50_000
    memory_mb: float = 32
    block_mb: int = 8

    def validate(self, where: str = "shard") -> None:
        require(self.count >= 1, f"{where}.count", f"must be >= 1, got {self.count}")
        require(bool(self.val_shards), f"{where}.val_shards", "name at least one validation shard")
        for v in self.val_shards:
            require(-self.count <= v < self.count, f"{where}.val_shards",
                    f"shard {v} is out of range for count={self.count}")
        require(len(self.resolved_val_shards()) < self.count or self.count == 1, f"{where}.val_shards",
                "leaves no training shard")
        require(self.max_per_class is None or self.max_per_class > 0, f"{where}.max_per_class",
                "must be a positive number or null")
        require(self.row_group_rows > 0 and self.memory_mb > 0 and self.block_mb > 0, where,
                "row_group_rows, memory_mb and block_mb must be positive")

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
    """Rejected rows with their reason, in a CSV a person can open."""

    def __init__(self, path: Path):
        self.fh = path.open("w", newline="")
        self.writer = csv.writer(self.fh)
        self.writer.writerow(QUARANTINE_COLUMNS)
        self.counts: dict[str, int] = {}

    def add(self, rows) -> None:
        for row in rows:
            self.counts[row[2]] = self.counts.get(row[2], 0) + 1
            self.writer.writerow(row)

    def close(self) -> None:
        self.fh.close()


def _strokes_json(batch: StrokeBatch, i: int) -> str:
    return json.dumps([[list(sx), list(sy)] for sx, sy in batch.drawing(i)], separators=(",", ":"))


def write_shards(source: Source, out_dir: str | Path, cfg: ShardParams, progress: bool = True) -> dict:
    """Run both passes; write shards, classes.csv, manifest.json, stats.json, quarantine.csv."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    spill_dir = out / "_spill"
    spill_dir.mkdir(parents=True)
    classes = source.classes
    label_of = {w: i for i, w in enumerate(classes)}
    quarantine = _Quarantine(out / "quarantine.csv")
    stats = {"rows_in": 0, "rows_out": 0, "filtered_unrecognized": 0, "empty_class_files": [],
             "skipped_files": list(source.skipped), "truncated_classes": 0}

    # ---- pass 1: stream, clean, route to shard spills
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    seq = 0
    total_bytes = sum(p.stat().st_size for p in source.class_files.values())
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="shard: read", disable=not progress)
    try:
        for word in classes:
            path = source.class_files[word]
            taken, rows_file, file_bytes = 0, 0, path.stat().st_size
            done_bytes = 0
            for table in iter_class_blocks(source, word, cfg.block_mb << 20):
                rows_file += table.num_rows
                stats["rows_in"] += table.num_rows
                step = min(table.nbytes, file_bytes - done_bytes)
                done_bytes += step
                bar.update(step)
                block = clean_block(table, word)
                quarantine.add(block.rejected)
                keep = np.ones(len(block), bool)
                if cfg.recognized_only:
                    keep &= block.recognized
                    stats["filtered_unrecognized"] += int((~block.recognized).sum())
                if cfg.max_per_class is not None:
                    room = cfg.max_per_class - taken
                    keep &= np.cumsum(keep) <= room
                n_keep = int(keep.sum())
                taken += n_keep
                if n_keep:
                    _route(block, keep, label_of[word], seq, cfg, writers, spill_dir)
                    seq += len(block)
                if cfg.max_per_class is not None and taken >= cfg.max_per_class:
                    stats["truncated_classes"] += 1
                    break
            bar.update(file_bytes - done_bytes)
            if rows_file == 0:
                stats["empty_class_files"].append(path.name)
                log.warning("class file %s is empty", path)
    finally:
        for w in writers.values():
            w.close()
        bar.close()

    # ---- pass 2: order each shard by its seeded key, drop duplicates, write parquet
    rows_per_shard = []
    per_class = np.zeros(len(classes), np.int64)
    dictionary = pa.array(classes, pa.string())
    for i in tqdm(range(cfg.count), desc="shard: shuffle+write", disable=not progress):
        spill = spill_dir / f"{i:03d}.arrow"
        writer = pq.ParquetWriter(out / shard_name(i), SHARD_SCHEMA, compression="snappy",
                                  use_dictionary=["word", "countrycode"],
                                  write_statistics=["key_id", "label"])
        n_out = 0
        if spill.exists():
            for table in _ordered_buckets(spill, cfg.seed, int(cfg.memory_mb * 2**20)):
                table, dups = _drop_duplicates(table)
                quarantine.add((classes[table_l], str(k), "duplicate_key_id", d) for table_l, k, d in dups)
                final = pa.table({
                    "key_id": table["key_id"],
                    "word": pa.DictionaryArray.from_arrays(table["label"].combine_chunks(), dictionary),
                    "label": table["label"], "countrycode": table["countrycode"],
                    "recognized": table["recognized"], "timestamp": table["timestamp"],
                    "x": table["x"], "y": table["y"],
                }, schema=SHARD_SCHEMA)
                writer.write_table(final, row_group_size=cfg.row_group_rows)
                n_out += final.num_rows
                per_class += np.bincount(table["label"].to_numpy(), minlength=len(classes))
        writer.close()
        rows_per_shard.append(n_out)
    shutil.rmtree(spill_dir)
    quarantine.close()

    val = cfg.resolved_val_shards()
    manifest = {
        "count": cfg.count, "seed": cfg.seed, "source": str(source.root), "source_kind": source.kind,
        "files": [shard_name(i) for i in range(cfg.count)],
        "val_shards": val, "train_shards": [i for i in range(cfg.count) if i not in val],
        "rows_per_shard": rows_per_shard, "num_classes": len(classes),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with (out / "classes.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "word"])
        w.writerows(enumerate(classes))

    seconds = time.perf_counter() - t0
    stats["rows_out"] = int(sum(rows_per_shard))
    stats["rejected"] = {r: quarantine.counts.get(r, 0)
                         for r in [*DRAWING_REASONS.values(), *ROW_REASONS]}
    stats["rejected_total"] = int(sum(quarantine.counts.values()))
    stats["rows_per_shard"] = rows_per_shard
    stats["rows_per_class"] = {w: int(c) for w, c in zip(classes, per_class)}
    stats["seconds"] = round(seconds, 3)
    stats["rows_per_s"] = round(stats["rows_in"] / seconds, 1) if seconds else 0.0
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _route(block, keep, label, seq0, cfg, writers, spill_dir) -> None:
    idx = np.flatnonzero(keep)
    strokes = block.strokes.take(idx) if len(idx) != len(block) else block.strokes
    x, y = strokes.to_arrow()
    key_id = block.key_id[idx]
    batch = pa.record_batch([
        pa.array(key_id), pa.array(np.full(len(idx), label, np.int16)),
        block.countrycode.take(pa.array(idx)), pa.array(block.recognized[idx]),
        block.timestamp.take(pa.array(idx)), x, y, pa.array(seq0 + idx),
    ], schema=SPILL_SCHEMA)
    shard = shard_of(key_id, cfg.count)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(cfg.count + 1))
    batch = batch.take(pa.array(order))  # one gather, then zero-copy slices per shard
    for s in np.unique(shard):
        part = batch.slice(bounds[s], bounds[s + 1] - bounds[s])
        w = writers.get(int(s))
        if w is None:
            w = writers[int(s)] = pa.ipc.new_stream(spill_dir / f"{int(s):03d}.arrow", SPILL_SCHEMA)
        w.write_batch(part)


def _ordered_buckets(spill: Path, seed: int, budget_bytes: int):
    """Yield the shard's rows as tables sorted by (order key, key_id, seq), bucket by bucket."""
    k = max(1, -(-spill.stat().st_size // max(budget_bytes, 1)))
    if k == 1:
        paths = [spill]
    else:  # split by key range into buckets that each fit the memory budget
        paths = [spill.with_suffix(f".b{b:04d}.arrow") for b in range(k)]
        writers = [pa.ipc.new_stream(p, SPILL_SCHEMA) for p in paths]
        with pa.ipc.open_stream(pa.OSFile(str(spill))) as reader:  # read, not mapped: RSS stays bounded
            for batch in reader:
                key = order_key(batch.column("key_id").to_numpy(), seed)
                bucket = (((key >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)).astype(np.int64)
                for b in np.unique(bucket):
                    writers[b].write_batch(batch.filter(pa.array(bucket == b)))
        for w in writers:
            w.close()
        spill.unlink()
    for p in paths:
        with pa.ipc.open_stream(pa.OSFile(str(p))) as reader:
            table = reader.read_all()
        if table.num_rows == 0:
            continue
        key_id = table["key_id"].to_numpy()
        order = np.lexsort((table["seq"].to_numpy(), key_id, order_key(key_id, seed)))
        yield table.take(pa.array(order))
        del table
        if p != spill:
            p.unlink()


def _drop_duplicates(table: pa.Table):
    """Keep the first occurrence (in input order) of each key_id; return the dropped ones."""
    key_id = table["key_id"].to_numpy()
    dup = np.zeros(len(key_id), bool)
    dup[1:] = key_id[1:] == key_id[:-1]
    if not dup.any():
        return table, []
    gone = np.flatnonzero(dup)
    strokes = StrokeBatch.from_arrow(table["x"], table["y"]).take(gone)
    labels = table["label"].to_numpy()
    dups = [(int(labels[g]), int(key_id[g]), _strokes_json(strokes, j)) for j, g in enumerate(gone)]
    return table.filter(pa.array(~dup)), dups


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
        t = pf.read_row_group(g, columns=["key_id", "label", "x", "y"])
        if limit is not None and done + t.num_rows > limit:
            t = t.slice(0, limit - done)
        done += t.num_rows
        yield (t["label"].to_numpy().astype(np.int64), t["key_id"].to_numpy(),
               StrokeBatch.from_arrow(t["x"], t["y"]))
