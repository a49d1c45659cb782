"""Pass 2 of the shard stage: shuffle one shard's spill files into its parquet file.

Each shard is ordered by a seeded hash of key_id (:func:`doodle.shard.format.order_key`). Sorting by a
uniform random key *is* a uniform shuffle; it makes the order independent of file order, and
puts duplicate key_ids next to each other, so they are found in shard-sized memory. A shard
larger than the memory budget is first split into key-range buckets that are each sorted
alone; concatenated in order, they equal the full sort.

The shard's content columns come from its :class:`doodle.shard.format.Layout` (strokes, or images for
the pixel sources); the order and the duplicate handling are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .format import STROKES, Layout, Quarantine, order_key, shard_name


@dataclass(frozen=True)
class ShuffleSpec:
    """What pass 2 needs to know about the run."""

    classes: list[str]
    spill_dir: Path  # pass 1's spill files, ``NNN-wWWW.arrow`` (and pass 2's buckets)
    parts_dir: Path  # quarantine part files
    seed: int
    budget_bytes: int  # memory for one bucket
    row_group_rows: int
    layout: Layout = STROKES
    out_dir: Path | None = None  # where the shards go; None: beside spill_dir


def write_shard(spec: ShuffleSpec, shard: int) -> dict:
    """Shuffle one shard's spills, drop duplicate key_ids, write its parquet file; its counts."""
    classes, layout = spec.classes, spec.layout
    quarantine = Quarantine(spec.parts_dir / f"dups-{shard:05d}.csv")
    per_class = np.zeros(len(classes), np.int64)
    dictionary = pa.array(classes, pa.string())
    spills = sorted(spec.spill_dir.glob(f"{shard:03d}-*.arrow"))
    n_out = 0
    with pq.ParquetWriter(
        (spec.out_dir or spec.spill_dir.parent) / shard_name(shard),
        layout.shard_schema,
        compression="snappy",
        use_dictionary=list(layout.dictionary_columns),
        write_statistics=["key_id", "label"],
    ) as writer:
        for table, order in _ordered_buckets(spills, spec.seed, spec.budget_bytes, layout):
            order = _drop_duplicates(table, order, quarantine, classes, layout)
            labels = table["label"].to_numpy()
            per_class += np.bincount(labels[order], minlength=len(classes))
            # gather one row group at a time: memory holds the bucket plus one row group
            for a in range(0, len(order), spec.row_group_rows):
                part = table.take(pa.array(order[a : a + spec.row_group_rows]))
                writer.write_table(
                    pa.table(
                        {
                            "key_id": part["key_id"],
                            "word": pa.DictionaryArray.from_arrays(part["label"].combine_chunks(), dictionary),
                            "label": part["label"],
                            **{c: part[c] for c in layout.columns},
                        },
                        schema=layout.shard_schema,
                    )
                )
            n_out += len(order)
            del table, order, part  # before the next bucket is read: one bucket in memory at a time
    return {"shard": shard, "rows_out": n_out, "per_class": per_class, "rejected": quarantine.close()}


def grouped(data, group: np.ndarray, groups: int):
    """(group, rows of ``data`` in that group) for each non-empty group, input order kept within
    a group: one gather of the whole table or batch, then zero-copy slices."""
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    data = data.take(pa.array(order))
    for g in np.flatnonzero(np.diff(bounds)):
        yield int(g), data.slice(bounds[g], bounds[g + 1] - bounds[g])


#: A reader's rows of one shard are appended in batches of about this size. Routing splits every
#: input block over all the shards, so without it a 200-shard run writes batches of ~20 rows, and
#: pass 2 spends its time iterating tens of thousands of them (measured: 0.3 s of a full-size
#: shard's 0.6 s). The rows waiting keep their input blocks alive, so memory grows with it:
#: measured at 200 shards, 2 readers, 64 KB / 256 KB / 1 MB gave 451 / 599 / 1,181 MB of peak
#: memory for the same speed (benchmarks/kaggle_scale.py, docs/performance.md).
SPILL_BATCH_BYTES = 64 << 10


class Spills:
    """Pass 1's spill files of one reader: one Arrow stream per shard (``NNN-<prefix>.arrow`` in
    ``spill_dir``), opened on its first rows; rows are kept per shard and appended in batches of
    about :data:`SPILL_BATCH_BYTES`. The batch boundaries never change the shards: pass 2 orders
    every row by its key and input position."""

    def __init__(self, spill_dir: Path, prefix: str, count: int):
        self.spill_dir, self.prefix, self.count = spill_dir, prefix, count
        self.writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self.pending: dict[int, list] = {}
        self.pending_bytes: dict[int, int] = {}

    def add(self, batch: pa.RecordBatch, shards: np.ndarray) -> None:
        """Append each row of ``batch`` to the spill of its shard (``shards``, one per row)."""
        for s, part in grouped(batch, shards, self.count):
            self.pending.setdefault(s, []).append(part)
            self.pending_bytes[s] = self.pending_bytes.get(s, 0) + part.nbytes
            if self.pending_bytes[s] >= SPILL_BATCH_BYTES:
                self._flush(s)

    def _flush(self, s: int) -> None:
        parts = self.pending.pop(s, [])
        self.pending_bytes.pop(s, None)
        if not parts:
            return
        w = self.writers.get(s)
        if w is None:
            path = self.spill_dir / f"{s:03d}-{self.prefix}.arrow"
            w = self.writers[s] = pa.ipc.new_stream(path, parts[0].schema)
        w.write_batch(pa.concat_batches(parts) if len(parts) > 1 else parts[0])

    def close(self) -> None:
        """Write what is pending and close every file (also after an error: what was written stays)."""
        try:
            for s in sorted(self.pending):
                self._flush(s)
        finally:
            for w in self.writers.values():
                w.close()


def _ordered_buckets(spills: list[Path], seed: int, budget_bytes: int, layout: Layout = STROKES):
    """Yield a shard's rows (from all its spill files) bucket by bucket, each bucket within
    ``budget_bytes``, as (table, order): ``order`` sorts the table by (order key, key_id, seq)."""
    size = sum(p.stat().st_size for p in spills)
    k = max(1, -(-size // max(budget_bytes, 1)))
    if k == 1:
        buckets = [spills]
    else:  # split by key range into buckets that each fit the memory budget
        stem = spills[0].name.split("-")[0]
        paths = [spills[0].with_name(f"{stem}.b{b:04d}.arrow") for b in range(k)]
        writers = [pa.ipc.new_stream(p, layout.spill_schema) for p in paths]
        for spill in spills:
            for table in _coalesced(spill, budget_bytes // 4):
                key = order_key(table["key_id"].to_numpy(), seed)
                bucket = (((key >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)).astype(np.int64)
                for b, part in grouped(table, bucket, k):
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
        # one contiguous table: a gather over thousands of small chunks costs 6x a contiguous one
        table = pa.concat_tables(tables).combine_chunks() if tables else None
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


def _drop_duplicates(
    table: pa.Table, order: np.ndarray, quarantine: Quarantine, classes, layout: Layout = STROKES
) -> np.ndarray:
    """``order`` without repeats of a key_id (kept: the first in input order, which the sort put
    first); the repeats go to the quarantine."""
    key_id = table["key_id"].to_numpy()[order]
    dup = np.zeros(len(order), bool)
    dup[1:] = key_id[1:] == key_id[:-1]
    if not dup.any():
        return order
    gone = order[dup]
    labels = table["label"].to_numpy()[gone]
    quarantine.add(
        (classes[int(lab)], str(int(k)), "duplicate_key_id", text)
        for lab, k, text in zip(labels, key_id[dup], layout.describe(table, gone))
    )
    return order[~dup]
