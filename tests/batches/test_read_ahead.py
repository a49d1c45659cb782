"""Batches made ahead on a thread of their own (doodle.batches.batching.ReadAhead, and the stage's
Keras adapter doodle.train.feed.StreamBatches that uses it without tf.data): the same batches in the
same order, errors raised where they belong, nothing left running, and the making overlapped with
the training step."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from doodle.batches.batching import ReadAhead
from doodle.batches.cache import CacheSplit
from doodle.batches.stream import BatchStream


def test_items_come_in_order_and_an_exhausted_read_ahead_stays_exhausted():
    ahead = ReadAhead(iter(range(10)), depth=3)
    assert list(ahead) == list(range(10))
    with pytest.raises(StopIteration):
        next(ahead)
    ahead.close()


def test_an_error_in_the_making_is_raised_by_the_next_that_would_return_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("drawing 3 is broken")

    ahead = ReadAhead(items(), depth=5)
    assert next(ahead) == 1 and next(ahead) == 2
    with pytest.raises(ValueError, match="drawing 3"):
        next(ahead)


def test_close_stops_the_thread_and_closes_what_it_read():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    ahead = ReadAhead(endless(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed.is_set() and not ahead.thread.is_alive()


def cache_stream(steps: int = 7) -> BatchStream:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (n, 4, 4, 1), dtype=np.uint8) for n in (90, 70, 40)]
    labels = [np.arange(len(i), dtype=np.int16) + 100 * k for k, i in enumerate(images)]
    split = CacheSplit(images, labels, [lab.astype(np.int64) for lab in labels])
    return BatchStream(split, 16, shuffle=True, seed=3, steps=steps, block_rows=20, buffer_blocks=2)


def passes(batches, count: int) -> list[list[np.ndarray]]:
    return [[batches[i][1].copy() for i in range(len(batches))] for _ in range(count)]


def test_the_adapter_reads_the_same_seeded_batches_with_or_without_reading_ahead_and_after_a_resume():
    from doodle.train.feed import StreamBatches

    plain = passes(StreamBatches(cache_stream(), read_ahead=0), 3)
    ahead = passes(StreamBatches(cache_stream(), read_ahead=2), 3)
    assert all(np.array_equal(a, b) for p, q in zip(plain, ahead) for a, b in zip(p, q))
    assert not np.array_equal(plain[0][0], plain[1][0])  # each epoch its own order
    resumed = passes(StreamBatches(cache_stream(), start_epoch=2, read_ahead=2), 1)
    assert all(np.array_equal(a, b) for a, b in zip(resumed[0], plain[2]))  # epoch 2, as uninterrupted


def test_keras_ending_a_pass_early_stops_its_thread_and_the_next_pass_starts_at_its_first_batch():
    from doodle.train.feed import StreamBatches

    batches = StreamBatches(cache_stream(), read_ahead=2)
    first = batches[0][1].copy()
    reader = batches._batches
    batches.on_epoch_end()  # e.g. the time budget cut the epoch, or Keras peeked before it starts over
    assert not reader.thread.is_alive()
    assert np.array_equal(batches[0][1], first)  # a pass not read to its end is read again, as the same epoch


class SlowStream:
    """Batches that each take ``making_s`` to make, without holding Python's lock (as the drawing
    kernels and numpy copies do)."""

    batch_size = 4

    def __init__(self, steps: int, making_s: float):
        self.steps, self.making_s = steps, making_s

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int = 0, own: bool = True):
        for i in range(self.steps):
            time.sleep(self.making_s)
            yield np.full((4, 1), i, np.float32), np.zeros(4, np.int32)


def epoch_seconds(read_ahead: int, steps: int, making_s: float, step_s: float) -> float:
    """An epoch of ``steps`` through the stage's adapter, each step taking ``step_s`` in the training
    thread without holding Python's lock (a sleep), as a step the loop waits for: on the GPU the
    figures said the loop did wait (the full path's time was the sum of input and model)."""
    from doodle.train.feed import StreamBatches

    batches = StreamBatches(SlowStream(steps, making_s), read_ahead=read_ahead)
    t0 = time.perf_counter()
    for i in range(steps):
        batches[i]
        time.sleep(step_s)
    return time.perf_counter() - t0


def test_an_epoch_takes_about_the_longer_of_making_and_training_not_their_sum():
    steps, making_s, step_s = 12, 0.04, 0.04
    serial = steps * (making_s + step_s)  # 0.96 s: each batch made after the step before it
    assert epoch_seconds(0, steps, making_s, step_s) >= 0.95 * serial
    overlapped = epoch_seconds(2, steps, making_s, step_s)  # ~ steps x 0.04 + the first batch: 0.52 s
    assert overlapped < 0.7 * serial, (overlapped, serial)
