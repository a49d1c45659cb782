"""Batches from the render cache, for any Keras backend, and a tf.data wrapper for TensorFlow.

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

import functools
import itertools
from collections.abc import Iterator

import numpy as np

from .cache import CacheSplit


class BatchStream:
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
        64-byte-aligned array: the only copy after the buffer. TensorFlow converts aligned
        arrays ~3x faster than numpy's default 16-byte alignment (measured, batch 680)."""
        n = sum(len(rows) for _, _, rows in pieces)
        shape = (n, *self.image_shape)
        nbytes = int(np.prod(shape))
        raw = np.empty(nbytes + 64, np.uint8)
        offset = -raw.ctypes.data % 64
        x = raw[offset : offset + nbytes].reshape(shape)
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

        def passes():
            p = 0
            while True:
                yield from self._rows(epoch * 1_000_003 + p)
                p += 1

        batches = batch_pieces(passes(), self.batch_size, self.steps * self.workers, keep_last=False)
        yield from map(self._gather, share(batches, self.workers, self.worker) if own else batches)

    def forever(self, start_epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        e = start_epoch
        while True:
            yield from self.epoch(e)
            e += 1


def batch_pieces(chunks, size: int, limit: int | None, keep_last: bool):
    """Cut a stream of buffers into batches of ``size`` rows, ``limit`` batches in all.

    ``chunks`` yields ``(data, labels, rows)``: a shuffled buffer and the order of its rows. Each
    batch is yielded as the list of ``(data, labels, rows)`` pieces it takes from one or two buffers
    (a batch may span a buffer boundary); the caller gathers them, so a worker gathers only its own
    batches. Both streams use it: :class:`BatchStream` (images) and
    :class:`doodle.batches.strokes.StrokeStream` (strokes), so they cut batches the same way."""
    carry, carried, steps = [], 0, 0
    for data, labels, rows in chunks:
        at = 0
        if carried:
            at = min(size - carried, len(rows))
            carry.append((data, labels, rows[:at]))
            carried += at
            if carried < size:
                continue
            yield carry
            carry, carried, steps = [], 0, steps + 1
            if limit is not None and steps >= limit:
                return
        while at + size <= len(rows):
            yield [(data, labels, rows[at : at + size])]
            at, steps = at + size, steps + 1
            if limit is not None and steps >= limit:
                return
        if at < len(rows):
            carry, carried = [(data, labels, rows[at:])], len(rows) - at
    if keep_last and carried:
        yield carry


def check_share(workers: int, worker: int, shuffle: bool) -> None:
    if workers < 1 or not 0 <= worker < workers:
        raise ValueError(f"worker must be in [0, workers), got worker {worker} of {workers}")
    if workers > 1 and not shuffle:
        raise ValueError("only a training stream (shuffle=True) is shared among workers")


def share(batches, workers: int, worker: int):
    """Worker ``worker``'s share of ``batches``: every ``workers``-th one, from the ``worker``-th."""
    return itertools.islice(batches, worker, None, workers) if workers > 1 else batches


def tf_dataset(stream: BatchStream, repeat: bool, start_epoch: int = 0):
    """Wrap a stream as a prefetched ``tf.data.Dataset`` of uint8 batches (the model rescales).

    ``start_epoch``: the epoch whose order the first batches follow. A resumed training passes the
    epoch it resumes at, so it sees the batches an uninterrupted run would have seen.

    Each iteration first undoes the allocator setting that ``from_generator`` makes (see
    :func:`restore_malloc_thresholds`): without that, a MobileNet training step at 64 px spent half
    its CPU time in the kernel and the train stage ran at half the speed of a plain ``model.fit``.
    """
    import tensorflow as tf

    shape = (None, *stream.image_shape)

    def gen():
        restore_malloc_thresholds()  # TensorFlow's generator kernel, built before this runs, has set its own
        return stream.forever(start_epoch) if repeat else stream.epoch(0)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec(shape, tf.uint8), tf.TensorSpec((None,), tf.int32))
    )
    return ds.prefetch(tf.data.AUTOTUNE)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20  # where glibc's dynamic threshold stops on 64-bit


def restore_malloc_thresholds() -> bool:
    """Undo TensorFlow's ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``; True if done (glibc only).

    TensorFlow's GeneratorDataset kernel (``Dataset.from_generator``) sets that once per process,
    when the first one is built, against a Python 3.11 memory leak
    (``ApplyPython311MemoryPatch`` in tensorflow/core/kernels/data/generator_dataset_op.cc). It also
    switches off glibc's dynamic threshold, which would otherwise rise to the size of the blocks the
    program frees (up to 32 MiB). Every tensor above 128 KiB then gets its own ``mmap`` and is
    unmapped when freed, so each training step maps fresh pages that the kernel zero-fills on first
    touch. Measured for MobileNet at 64 px, batch 128, on 2 cores: ~3.5 GB mapped and unmapped a
    step, ~750,000 page faults and ~2.4 s of system CPU a step (over 40% of the train stage's CPU
    time), a step ~1.8x the CPU time of a plain ``model.fit`` on numpy arrays (which builds no
    generator kernel). A process whose heap had already grown before the patch escaped, so the
    slowdown came and went with what the process had run first.

    This sets the thresholds glibc's own dynamic rule would reach (mmap above 32 MiB, trim above
    twice that), so blocks up to 32 MiB are reused from the heap. Measured, the RSS of 3,000 steps
    through this dataset stays flat (867-878 MB): the leak the patch was for does not come back."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    trim_set = libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
    return bool(mmap_set and trim_set)


@functools.cache
def _glibc():
    """The C library when it is glibc (whose ``mallopt`` this tunes), else None."""
    import ctypes
    import os

    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):
        return None
