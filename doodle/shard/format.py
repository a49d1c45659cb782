"""What a shard is: the parquet layout, the key hashes that place and order rows, the quarantine
file, and reading shards back. Writing them is :mod:`doodle.shard.run` (pass 1) and
:mod:`doodle.shard.shuffle` (pass 2).

A shard holds either drawings as strokes (:data:`STROKES`) or, for the pixel sources, images
(:func:`image_layout`: one ``image`` column of H x W bytes a row); both share key_id, word and
label, the sharding and the shuffle.

A drawing's shard depends only on its key_id (and the shard count), so adding data never moves
an existing drawing, and the validation shards stay the validation shards.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from doodle.drawing.strokes import STROKE_COLUMNS, STROKE_FIELDS, StrokeBatch

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


@dataclass(frozen=True)
class Layout:
    """What a shard holds besides key_id, word and label: ``columns``, copied from the spill."""

    spill_schema: pa.Schema
    shard_schema: pa.Schema
    columns: tuple[str, ...]
    dictionary_columns: tuple[str, ...]  # parquet dictionary encoding
    describe: Callable[[pa.Table, np.ndarray], list[str]]  # rows as text, for the quarantine


def _describe_strokes(table: pa.Table, rows: np.ndarray) -> list[str]:
    strokes = StrokeBatch.from_arrow(*(table[c] for c in STROKE_COLUMNS)).take(rows)
    return [strokes_json(strokes, j) for j in range(len(rows))]


def _describe_images(table: pa.Table, rows: np.ndarray) -> list[str]:
    images = image_array(table["image"].take(pa.array(rows)))
    return [",".join(map(str, img.ravel().tolist())) for img in images]


STROKES = Layout(
    SPILL_SCHEMA,
    SHARD_SCHEMA,
    ("countrycode", "recognized", "timestamp", *STROKE_COLUMNS),
    ("word", "countrycode"),
    _describe_strokes,
)


def image_layout(shape: tuple[int, int]) -> Layout:
    """Image shards of ``shape`` (H, W) images: key_id, word, label, image (H*W bytes, row-major)."""
    image = ("image", pa.binary(int(shape[0]) * int(shape[1])))
    return Layout(
        pa.schema([("key_id", pa.int64()), ("label", pa.int16()), image, ("seq", pa.int64())]),
        pa.schema([("key_id", pa.int64()), ("word", SHARD_SCHEMA.field("word").type), ("label", pa.int16()), image]),
        ("image",),
        ("word",),
        _describe_images,
    )


def image_column(images: np.ndarray) -> pa.Array:
    """(n, H, W) uint8 -> a fixed-size binary column, one image a value, without a copy."""
    images = np.ascontiguousarray(images, np.uint8)
    n, width = len(images), int(np.prod(images.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(images)])


def image_array(column, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A fixed-size binary column back to (n, H, W) uint8 (square images unless ``shape``)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = column.type.byte_width
    if shape is None:
        side = math.isqrt(width)
        shape = (side, width // side)
    data = np.frombuffer(column.buffers()[1], np.uint8)
    start = column.offset * width
    return data[start : start + len(column) * width].reshape(len(column), *shape)


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


def split_shards(manifest: dict, split: str, train_shards: int | None = None) -> list[int]:
    """The shard indices of ``split`` ("train" or "val") in file order. For "train", the first
    ``train_shards`` training shards (None: all): ``render.train_shards``, the one rule the render
    cache, the on-the-fly stroke stream, the folds and the baseline share, so that each of them
    reads the same training drawings."""
    if split == "val":
        return list(manifest["val_shards"])
    if split == "train":
        train = manifest["train_shards"]
        return list(train if train_shards is None else train[:train_shards])
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def read_classes(path: str | Path) -> list[str]:
    """A classes.csv (index,word) as a list indexed by label."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["word"] for r in sorted(rows, key=lambda r: int(r["index"]))]


def row_groups(path: str | Path, limit: int | None = None) -> list[tuple[Path, int, int]]:
    """(path, row group, rows) covering the first ``limit`` rows of a shard (all when None), from its
    footer alone: the plan by which the on-the-fly training stream and the baseline's sample read."""
    path = Path(path)
    meta = pq.read_metadata(path)
    left = meta.num_rows if limit is None else min(meta.num_rows, limit)
    groups = []
    for g in range(meta.num_row_groups):
        rows = min(meta.row_group(g).num_rows, left)
        if rows > 0:
            groups.append((path, g, rows))
        left -= rows
    return groups


def read_group(shard: str | Path | pq.ParquetFile, group: int, columns: list[str], rows: int | None = None) -> pa.Table:
    """``columns`` of the first ``rows`` rows (None: all) of one row group of a shard (a path, or the
    file already open): the one place a shard's row group is read (only those columns are)."""
    pf = shard if isinstance(shard, pq.ParquetFile) else pq.ParquetFile(shard)
    t = pf.read_row_group(group, columns=columns)
    return t if rows is None or rows >= t.num_rows else t.slice(0, rows)


def iter_groups(path: str | Path, columns: list[str], limit: int | None = None):
    """``columns`` of each row group of a shard in order, up to ``limit`` rows in all (None: all)."""
    pf = pq.ParquetFile(path)
    for _path, g, n in row_groups(path, limit):
        yield read_group(pf, g, columns, n)


def read_strokes(path: str | Path, group: int, rows: int) -> tuple[StrokeBatch, np.ndarray]:
    """The strokes and labels of the first ``rows`` rows of one row group of a stroke shard."""
    t = read_group(path, group, ["label", *STROKE_COLUMNS], rows)
    return StrokeBatch.from_arrow(*(t[c] for c in STROKE_COLUMNS)), t["label"].to_numpy()


def iter_shard_batches(path: str | Path, limit: int | None = None):
    """(labels int64, key_ids int64, StrokeBatch) per row group of a shard, up to ``limit`` rows."""
    for t in iter_groups(path, ["key_id", "label", *STROKE_COLUMNS], limit):
        yield (
            t["label"].to_numpy().astype(np.int64),
            t["key_id"].to_numpy(),
            StrokeBatch.from_arrow(*(t[c] for c in STROKE_COLUMNS)),
        )


def iter_image_batches(path: str | Path, shape: tuple[int, int], limit: int | None = None):
    """(labels int64, key_ids int64, images (n, H, W) uint8) per row group of an image shard."""
    for t in iter_groups(path, ["key_id", "label", "image"], limit):
        yield t["label"].to_numpy().astype(np.int64), t["key_id"].to_numpy(), image_array(t["image"], shape)
