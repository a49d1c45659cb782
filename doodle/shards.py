"""What a shard is: the parquet layout, the key hashes that place and order rows, the quarantine
file, and reading shards back. Writing them is :mod:`doodle.sharding` (pass 1) and
:mod:`doodle.shuffle` (pass 2).

A drawing's shard depends only on its key_id (and the shard count), so adding data never moves
an existing drawing, and the validation shards stay the validation shards.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .strokes import STROKE_COLUMNS, STROKE_FIELDS, StrokeBatch

#: What pass 1 appends to a shard's spill files: the shard's columns without the word (the
#: label stands for it), plus ``seq``, the row's input position, which decides which of two
#: rows with the same key_id is kept (the first).
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


def shard_name(i: int) -> str:
    return f"shard-{i:03d}.parquet"


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


class Quarantine:
    """Rejected rows with their reason, in a CSV a person can open. Each worker task writes its
    own part file (no header); :func:`join_quarantine` joins them in input order, so the file is
    the same whatever the number of workers."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None
        self.counts: dict[str, int] = {}

    def add(self, rows) -> None:
        """``rows``: (word, key_id text, reason, drawing text) tuples."""
        for row in rows:
            if self.fh is None:
                self.fh = self.path.open("w", newline="")
                self.writer = csv.writer(self.fh)
            self.counts[row[2]] = self.counts.get(row[2], 0) + 1
            self.writer.writerow(row)

    def close(self) -> dict[str, int]:
        """Close the part file; the number of rows per reason."""
        if self.fh is not None:
            self.fh.close()
        return self.counts


def join_quarantine(parts: list[Path], path: Path) -> None:
    """Write ``path`` (with its header) from the part files, in the given order."""
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerow(QUARANTINE_COLUMNS)
        for part in parts:
            with part.open(newline="") as src:
                shutil.copyfileobj(src, fh)


def strokes_json(batch: StrokeBatch, i: int) -> str:
    """Drawing ``i`` back as Kaggle's JSON text (for the quarantine file)."""
    return json.dumps([[list(sx), list(sy)] for sx, sy in batch.drawing(i)], separators=(",", ":"))


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
