"""What both batch streams share, so that they cut, share and hand over batches the same way:
the cache's :class:`doodle.batches.stream.BatchStream` and the strokes'
:class:`doodle.batches.strokes.StrokeStream`. Endless seeded passes (:func:`passes`), batches cut
from shuffled buffers (:func:`batch_pieces`), a worker's share of them (:func:`share`), the
64-byte-aligned batch arrays (:func:`aligned_empty`), the tf.data wrapper for the TensorFlow
backend (:func:`tf_dataset`) and, for the others, batches made ahead on a thread of their own
(:class:`ReadAhead`); the streams themselves are plain numpy, for any Keras backend.

A batch holds what the stream's encoder makes of each drawing: uint8 images (the cache, the
rasterizer) or float32 point sequences (:mod:`doodle.drawing.sequence`); ``Stream.dtype`` says which.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from doodle.core.malloc import restore_malloc_thresholds

Batch = tuple[np.ndarray, np.ndarray]  # (inputs: uint8 images or float32 sequences, int32 labels)


class Stream:
    """A batch stream: ``len`` batches an epoch, ``image_shape`` and ``dtype`` of one input (an
    image, or a sequence despite the name), ``epoch(e)`` and ``forever``."""

    batch_size: int
    image_shape: tuple[int, ...]
    dtype: type = np.uint8

    def epoch(self, epoch: int = 0, own: bool = True) -> Iterator[Batch]:
        raise NotImplementedError

    def forever(self, start_epoch: int = 0) -> Iterator[Batch]:
        """Epoch after epoch from ``start_epoch``: a resumed training passes the epoch it resumes at."""
        e = start_epoch
        while True:
            yield from self.epoch(e)
            e += 1


def passes(rows: Callable[[int], Iterator], epoch: int) -> Iterator:
    """Endless passes of ``rows(seed)`` for a training epoch: pass ``p`` is shuffled with seed
    ``epoch * 1_000_003 + p``, so an epoch's batches depend on the epoch alone (a resumed run sees
    what an uninterrupted one did) and an epoch longer than the data never repeats an order."""
    p = 0
    while True:
        yield from rows(epoch * 1_000_003 + p)
        p += 1


def aligned_empty(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary: TensorFlow converts such a
    batch ~3x faster than numpy's default 16-byte alignment (measured, uint8 batch 680)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def batch_pieces(chunks, size: int, limit: int | None, keep_last: bool):
    """Cut a stream of buffers into batches of ``size`` rows, ``limit`` batches in all.

    ``chunks`` yields ``(data, labels, rows)``: a shuffled buffer and the order of its rows. Each
    batch is yielded as the list of ``(data, labels, rows)`` pieces it takes from one or two buffers
    (a batch may span a buffer boundary); the caller gathers them, so a worker gathers only its own
    batches. Both streams use it: :class:`doodle.batches.stream.BatchStream` (images) and
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


def tf_dataset(stream: Stream, repeat: bool, start_epoch: int = 0):
    """Wrap a stream as a prefetched ``tf.data.Dataset`` of its batches: ``stream.dtype`` inputs
    (uint8 images, which the model rescales, or float32 sequences) and int32 labels.

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
        gen, output_signature=(tf.TensorSpec(shape, tf.as_dtype(stream.dtype)), tf.TensorSpec((None,), tf.int32))
    )
    return ds.prefetch(tf.data.AUTOTUNE)


class ReadAhead:
    """The items of ``items`` in their order, made up to ``depth`` ahead on a thread of their own: a
    training loop that takes a batch, then dispatches a step the device runs without it, gets the
    next batch made meanwhile, so an epoch takes about the longer of the two, not their sum.

    One thread, so the order is the iterator's and nothing else changes (a seeded stream gives the
    same batches; a resumed run sees what an uninterrupted one did). The making itself overlaps only
    where it leaves Python's lock (numpy copies, parquet reads, the drawing kernels). An error in
    the making is raised by the ``next`` that would have returned its item. :meth:`close` stops the
    thread (it closes ``items`` there) and drops what it made."""

    _END = object()

    def __init__(self, items: Iterator, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._make, args=(items,), name="doodle-read-ahead", daemon=True)
        self.thread.start()

    def _make(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    break
            else:
                self._put(self._END)
        except BaseException as exc:  # handed to the reader, raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._END:
            self.queue.put(self._END)  # an exhausted ReadAhead stays exhausted
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error
