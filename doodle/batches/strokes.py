"""Training batches drawn on the fly from the parquet stroke shards, optionally augmented: images
by the rasterizer, or point sequences (:mod:`doodle.drawing.sequence`), whichever encoder it is given.

The render cache holds every image: 64x64x1 for all 49.7M Kaggle drawings is ~204 GB. The shards
hold the same drawings as strokes, ~100-150 bytes a drawing against 4,096 for its 64x64 image,
and the rasterizer draws ~100,000 images/s per core, far more than a model trains on. So
:class:`StrokeStream` reads the shards and draws each batch as it is needed, with the one rasterizer
(:func:`doodle.drawing.raster.render`) and the render params the cache would use: without augmentation
its images are byte for byte the cache's. Drawing per batch also lets every epoch see
new versions of each drawing (:mod:`doodle.drawing.augment`), which a cache cannot.

It is a drop-in for :class:`doodle.batches.stream.BatchStream` (``len``, ``image_shape``, ``epoch``,
``forever``; :func:`doodle.batches.batching.tf_dataset` takes either) and shuffles the same way, seeded
per epoch: the order of blocks across all shards, then rows within a buffer of blocks. A block is
one parquet row group (the unit parquet reads), so memory holds ``buffer_groups`` row groups of
strokes (two buffers while one gives way to the next), whatever the number of shards: only the
row-group sizes are kept per shard, and a file is opened when one of its row groups is read.

The encoder (:class:`doodle.drawing.sequence.Encoder`) is :class:`~doodle.drawing.raster.RenderParams`
(uint8 images) or :class:`~doodle.drawing.sequence.SequenceParams` (float32 point sequences, for the
stroke models): the same shuffle and the same augmentation numbers (drawn per batch before encoding)
serve both, so for a seed and an epoch the two see the same drawings, transformed the same way.

Encoding runs in ``threads`` threads, each encoding a slice of the batch: both kernels release
the GIL (``nogil``), so they run in parallel, one batch ahead of the consumer.

In a multi-worker training (``workers`` > 1) every worker reads the same seeded stream of strokes
and draws only its own batches (``worker``, ``worker + workers``, ...), as
:class:`doodle.batches.stream.BatchStream` does: the ``workers`` batches of a step hold the drawings of
the one batch of ``batch_size * workers`` that a single process reads. The augmentation numbers of
the other workers' batches are drawn (not rendered) too, so each image is the one a single process
with this ``batch_size`` draws for that batch. (A transform is drawn per batch, so with stroke
augmentation on, the images differ from those of a single process with the global batch; only
without it are they the same bytes.)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from doodle.drawing.augment import StrokeAugmentParams, sample
from doodle.drawing.sequence import Encoder
from doodle.drawing.strokes import StrokeBatch
from doodle.shard.format import read_group, read_manifest, read_strokes, row_groups, split_shards

from .batching import Stream, aligned_empty, batch_pieces, check_share, passes
from .cache import LabelledRows

#: Mixed into the augmentation generator's seed, so it never repeats the shuffle's numbers.
_AUGMENT_STREAM = 0xA06


def shard_paths(shard_dir: str | Path, split: str, train_shards: int | None = None) -> list[Path]:
    """The parquet files of ``split`` ("train" or "val") from the shard manifest; ``train_shards``
    takes only the first N training shards, as ``render.train_shards`` does for the cache."""
    shard_dir = Path(shard_dir)
    man = read_manifest(shard_dir)
    return [shard_dir / man["files"][i] for i in split_shards(man, split, train_shards)]


def concat(batches: list[StrokeBatch]) -> StrokeBatch:
    """One StrokeBatch holding the drawings of ``batches`` in order (copies the points)."""
    if len(batches) == 1:
        return batches[0]
    xs, ys, pos, sos = [], [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    points = strokes = 0
    for b in batches:
        so = np.asarray(b.stroke_offsets, np.int64)
        po = np.asarray(b.point_offsets, np.int64)
        p0, p1 = int(po[so[0]]), int(po[so[-1]])
        xs.append(b.x[p0:p1])
        ys.append(b.y[p0:p1])
        pos.append(po[so[0] + 1 : so[-1] + 1] - p0 + points)
        sos.append(so[1:] - so[0] + strokes)
        points += p1 - p0
        strokes += int(so[-1] - so[0])
    return StrokeBatch(np.concatenate(xs), np.concatenate(ys), np.concatenate(pos), np.concatenate(sos))


class StrokeStream(Stream):
    """Batches of (inputs, int32 labels) drawn from stroke shards: inputs are what ``encoder``
    makes of the drawings, ``(B, *encoder.shape())`` of ``encoder.dtype`` (uint8 images
    ``(B, S, S, C)`` for :class:`~doodle.drawing.raster.RenderParams`, float32 sequences ``(B, L, C)``
    for :class:`~doodle.drawing.sequence.SequenceParams`).

    ``augment`` (off when None or all zero) is drawn per drawing from a generator seeded by
    (``seed``, epoch): the same epoch gives the same images, the next one new ones, and a
    resumed training sees what an uninterrupted one would have. ``max_per_shard`` reads only
    the first N rows of each shard (as ``render.max_per_shard`` does for the cache).
    ``workers``/``worker``: this process's share of a multi-worker training (see the module doc);
    ``steps`` then counts this worker's batches, one per global step.
    """

    def __init__(
        self,
        shards: list[str | Path],
        encoder: Encoder,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        steps: int | None = None,
        buffer_groups: int = 4,
        augment: StrokeAugmentParams | None = None,
        max_per_shard: int | None = None,
        threads: int | None = None,
        workers: int = 1,
        worker: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if buffer_groups < 1:
            raise ValueError(f"buffer_groups must be >= 1, got {buffer_groups}")
        check_share(workers, worker, shuffle)
        self.workers, self.worker = workers, worker
        self.encoder = encoder
        self.dtype = encoder.dtype
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_groups = buffer_groups
        self.augment = augment if augment is not None and augment.any() else None
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = None
        # (path, row group, rows to read): only footers are read here, so this costs nothing per row
        self.groups = [group for path in shards for group in row_groups(path, max_per_shard)]
        self.rows = sum(rows for _, _, rows in self.groups)
        if self.rows == 0:
            raise ValueError("the shards hold no rows: nothing to read (check the shard params)")
        self.steps = steps or -(-self.rows // (batch_size * workers))  # one pass of the global batch

    def __len__(self) -> int:
        return self.steps

    def __getstate__(self) -> dict:
        """Without the drawing threads (a copy sent to another process starts its own)."""
        return {**self.__dict__, "_pool": None}

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one input: ``encoder.shape()`` (an image's, or a sequence's)."""
        return self.encoder.shape()

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _read(path: Path, group: int, rows: int) -> tuple[StrokeBatch, np.ndarray]:
        """One row group's strokes and labels (only those columns are read)."""
        strokes, labels = read_strokes(path, group, rows)
        return strokes, labels.astype(np.int32)

    def _rows(self, pass_seed: int) -> Iterator[tuple[StrokeBatch, np.ndarray, np.ndarray]]:
        """One pass over the data as (strokes, labels, order) buffers of ``buffer_groups`` row
        groups; ``order`` is the row order to read the buffer in (seeded, or 0..n-1)."""
        rng = np.random.default_rng([self.seed, pass_seed])
        order = rng.permutation(len(self.groups)) if self.shuffle else np.arange(len(self.groups))
        for g in range(0, len(order), self.buffer_groups):
            parts = [self._read(*self.groups[i]) for i in order[g : g + self.buffer_groups]]
            strokes = concat([s for s, _ in parts])
            labels = np.concatenate([lab for _, lab in parts])
            del parts  # the Arrow tables go now (concat copied them), not after the buffer's last batch
            rows = rng.permutation(len(labels)) if self.shuffle else np.arange(len(labels))
            yield strokes, labels, rows

    # ------------------------------------------------------------------ drawing
    def _start(self, pieces, rng: np.random.Generator | None):
        """Start drawing one batch from (strokes, labels, rows) pieces: gather the drawings,
        sample their augmentation, and hand ``threads`` slices of the batch to the pool, each
        encoding straight into its part of a fresh 64-byte-aligned array. Returns
        (inputs, labels, futures); the inputs are ready once the futures are done."""
        batch = concat([strokes.take(rows) for strokes, _, rows in pieces])
        y = np.concatenate([labels[rows] for _, labels, rows in pieces]).astype(np.int32, copy=False)
        n = len(batch)
        x = aligned_empty((n, *self.image_shape), self.dtype)
        affine = keep = None
        if self.augment is not None:
            affine, keep = sample(rng, batch.stroke_counts(), self.augment)
        so = np.asarray(batch.stroke_offsets, np.int64)

        def draw(a: int, b: int) -> None:
            # a slice of the batch is a view: its stroke offsets need not start at 0
            part = StrokeBatch(batch.x, batch.y, batch.point_offsets, so[a : b + 1])
            self.encoder.encode(
                part,
                out=x[a:b],
                affine=None if affine is None else affine[a:b],
                keep=None if keep is None else keep[so[a] - so[0] : so[b] - so[0]],
            )

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encode")
        cuts = np.linspace(0, n, min(self.threads, n) + 1).astype(int).tolist()
        return x, y, [self._pool.submit(draw, a, b) for a, b in itertools.pairwise(cuts)]

    def _drawn(self, batches, rng, own: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Draw the batches one ahead: while the consumer takes batch k (tf.data copies it into
        a tensor), the pool already draws batch k + 1. The order of the random numbers, and so
        every image, is the same as drawing one at a time. ``own``: draw only this worker's
        batches, and only the augmentation numbers of the others (so the images stay the same)."""
        pending = None
        for i, pieces in enumerate(batches):
            if own and i % self.workers != self.worker:
                if rng is not None:
                    counts = [np.diff(np.asarray(s.stroke_offsets, np.int64))[rows] for s, _, rows in pieces]
                    sample(rng, np.concatenate(counts), self.augment)
                continue
            started = self._start(pieces, rng)
            if pending is not None:
                yield _finish(pending)
            pending = started
        if pending is not None:
            yield _finish(pending)

    def epoch(self, epoch: int = 0, own: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Training (shuffle): exactly ``len(self)`` full batches, passes repeat as needed.
        Validation (no shuffle): one ordered pass, its last batch possibly short.

        With ``workers`` > 1 these are this worker's batches; ``own=False`` gives every batch of the
        stream instead, the same on every worker (for work all workers must agree on)."""
        rng = np.random.default_rng([self.seed, epoch, _AUGMENT_STREAM]) if self.augment is not None else None
        if not self.shuffle:
            yield from self._drawn(batch_pieces(self._rows(0), self.batch_size, self.steps, keep_last=True), rng)
            return

        limit = self.steps * self.workers
        yield from self._drawn(
            batch_pieces(passes(self._rows, epoch), self.batch_size, limit, keep_last=False),
            rng,
            own and self.workers > 1,
        )


def _finish(started) -> tuple[np.ndarray, np.ndarray]:
    """The (images, labels) of a batch from :meth:`StrokeStream._start`, once drawn."""
    x, y, futures = started
    for f in futures:
        f.result()  # re-raises an encoding error here
    return x, y


class DrawnSplit(LabelledRows):
    """Shards read as a validation split whose images are drawn on the fly, for a cross-validation
    fold of ``render.train_cache: false``, where the cache holds no image of the fold's held-out
    shards. It gives what the fold code reads of a :class:`doodle.batches.cache.CacheSplit`: ``rows``,
    ``keys`` and ``labels`` (lists of arrays to concatenate, one per row group, not per shard),
    ``all_labels()``, and ``images``: every image in order, in blocks, drawn anew on each use, with
    the same render params and row order as :meth:`stream`'s batches. Keys and labels are read up
    front: 10 bytes a drawing, as the cache keeps them. ``encoder`` as :class:`StrokeStream` takes it
    (``images`` are then what it encodes)."""

    def __init__(
        self,
        shards: list[str | Path],
        encoder: Encoder,
        max_per_shard: int | None = None,
        threads: int | None = None,
    ):
        self.paths = [Path(p) for p in shards]
        self.encoder = encoder
        self.max_per_shard = max_per_shard
        self.threads = threads
        probe = self.stream(1)  # the row groups and how much of each, as every stream of it reads them
        self.keys, self.labels = [], []
        for path, group, rows in probe.groups:
            t = read_group(path, group, ["key_id", "label"], rows)
            self.keys.append(t["key_id"].to_numpy().astype(np.int64))
            self.labels.append(t["label"].to_numpy().astype(np.int16))

    def stream(self, batch_size: int, steps: int | None = None) -> StrokeStream:
        """An ordered stream of its batches (validation in ``model.fit``), ``steps`` of them or all."""
        return StrokeStream(
            self.paths,
            self.encoder,
            batch_size,
            shuffle=False,
            steps=steps,
            max_per_shard=self.max_per_shard,
            threads=self.threads,
        )

    @property
    def images(self) -> Iterator[np.ndarray]:
        """Every image in order, in blocks of up to 4,096 (drawn as they are asked for)."""
        stream = self.stream(4096)
        return (x for x, _ in stream.epoch(0))
