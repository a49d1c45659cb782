"""The render cache read back: a split's (or a fold's) shards as memory-mapped arrays. The cache's
format and its writer are :mod:`doodle.render` (format, run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle.render.format import cache_files, read_cache_manifest


class LabelledRows:
    """What a split of drawings with ``labels`` (a list of arrays, in row order) reports of them:
    shared by the cache's splits and :class:`doodle.batches.strokes.DrawnSplit`."""

    labels: list[np.ndarray]

    @property
    def rows(self) -> int:
        return sum(len(lab) for lab in self.labels)

    def all_labels(self) -> np.ndarray:
        return np.concatenate(self.labels).astype(np.int64) if self.labels else np.zeros(0, np.int64)


@dataclass
class CacheSplit(LabelledRows):
    """Memory-mapped arrays of one split (``train`` or ``val``) of a cache."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    keys: list[np.ndarray]


def open_split(cache_dir: str | Path, split: str) -> CacheSplit:
    """The cache files the render stage marked ``split`` (``train`` or ``val``), memory-mapped."""
    man = read_cache_manifest(cache_dir)
    return open_files(cache_dir, [f["prefix"] for f in man["files"] if f["split"] == split])


def open_files(cache_dir: str | Path, prefixes) -> CacheSplit:
    """The cache files ``prefixes`` (one per shard, e.g. ``shard-003``), memory-mapped, in the order
    given; empty ones are skipped. A cross-validation fold (doodle.train.folds) is such a list of shards."""
    cache_dir = Path(cache_dir)
    man = read_cache_manifest(cache_dir)
    rows = {f["prefix"]: f["rows"] for f in man["files"]}
    missing = [p for p in prefixes if p not in rows]
    if missing:
        raise FileNotFoundError(f"{cache_dir} holds no {', '.join(missing)}: rerun the render stage")
    out = CacheSplit([], [], [])
    for prefix in (p for p in prefixes if rows[p] > 0):
        files = cache_files(cache_dir / prefix)
        out.images.append(np.load(files["images"], mmap_mode="r"))
        out.labels.append(np.load(files["labels"]))
        out.keys.append(np.load(files["keys"]))
    return out
