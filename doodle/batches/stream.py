"""Batches from the render cache, for any Keras backend (tf.data wraps them: doodle.batches.batching).

The full cache (~204 GB at 64x64) is far larger than RAM and lives on disk, where random access
per image is slow. :class:`BatchStream` therefore shuffles at two levels, seeded per epoch:
the order of blocks (``block_rows`` consecutive rows of one shard, read sequentially) across
all shards, then rows within a buffer of ``buffer_blocks`` blocks. Shards are already
uniformly shuffled by the shard stage, so this is close to a full shuffle at sequential-read
cost, in memory fixed by ``block_rows * buffer_blocks`` images. Everything is whole-batch numpy:
nothing per image runs in Python.

In a multi-worker training (``workers`` > 1) every worker walks the same seeded stream and gathers
only its own batches: worker ``w`` takes batches ``w, w + workers, ...``. The ``workers`` batches of
one step are therefore, row for row, the one batch of ``batch_size * workers`` that a single
process reads: the global batch is the per-worker batch times the workers, and the data seen does
not depend on how many machines share it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .batching import Stream, aligned_empty, batch_pieces, check_share, passes, share
from .cache import CacheSplit


class BatchStream(Stream):
    def __init__(
        self,
        split: CacheSplit,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        steps: int | None = None,
        block_rows: int = 512,
        buffer_blocks: int = 64,
        workers: int = 1,
        worker: int = 0,
    ):
        if split.rows == 0:
            raise ValueError("the cache split is empty: nothing to read (check render/shard params)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_share(workers, worker, shuffle)
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.block_rows = block_rows
        self.buffer_blocks = buffer_blocks
        self.blocks = [
            (s, a, min(a + block_rows, len(lab)))
            for s, lab in enumerate(split.labels)
            for a in range(0, len(lab), block_rows)
        ]
        self.workers, self.worker = workers, worker
        full = -(-split.rows // (batch_size * workers))  # one pass of the global batch
        self.steps = steps or full

    def __len__(self) -> int:
        return self.steps

    @property
    def rows(self) -> int:
        return self.split.rows

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.split.images[0].shape[1:])

    def _rows(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One pass over the data as (images, labels, order) buffers: ``order`` is the row
        order to read the buffer in (a seeded permutation, or 0..n-1 without shuffle)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.blocks)) if self.shuffle else np.arange(len(self.blocks))
        for g in range(0, len(order), self.buffer_blocks):
            group = [self.blocks[i] for i in order[g : g + self.buffer_blocks]]
            images = np.concatenate([self.split.images[s][a:b] for s, a, b in group])
            labels = np.concatenate([self.split.labels[s][a:b] for s, a, b in group])
            rows = rng.permutation(len(labels)) if self.shuffle else np.arange(len(labels))
            yield images, labels, rows

    def _gather(self, pieces) -> tuple[np.ndarray, np.ndarray]:
        """One batch from (images, labels, rows) pieces, gathered straight into a fresh
        64-byte-aligned array (:func:`~doodle.batches.batching.aligned_empty`): the only copy
        after the buffer."""
        n = sum(len(rows) for _, _, rows in pieces)
        shape = (n, *self.image_shape)
        x = aligned_empty(shape)
        y = np.empty(n, np.int32)
        at = 0
        for images, labels, rows in pieces:
            np.take(images, rows, axis=0, out=x[at : at + len(rows)], mode="clip")  # rows are in range
            y[at : at + len(rows)] = labels[rows]
            at += len(rows)
        return x, y

    def epoch(self, epoch: int = 0, own: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Training (shuffle): exactly ``len(self)`` full batches, passes repeat as needed.
        Validation (no shuffle): one ordered pass, its last batch possibly short.

        With ``workers`` > 1 these are this worker's batches; ``own=False`` gives every batch of the
        stream instead, the same on every worker (for work all workers must agree on)."""
        if not self.shuffle:
            yield from map(self._gather, batch_pieces(self._rows(0), self.batch_size, self.steps, keep_last=True))
            return

        batches = batch_pieces(passes(self._rows, epoch), self.batch_size, self.steps * self.workers, keep_last=False)
        yield from map(self._gather, share(batches, self.workers, self.worker) if own else batches)
