"""The render cache read back as batches (doodle.batches.stream, doodle.batches.cache): every row once,
in order or seeded-shuffled, across buffer boundaries, and as a tf.data dataset."""

import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from doodle.batches.cache import CacheSplit
from doodle.batches.stream import BatchStream
from tests.conftest import REPO


def split(sizes=(1000, 700, 300)):
    images, labels, keys, start = [], [], [], 0
    for n in sizes:
        ids = np.arange(start, start + n)
        images.append((ids % 251).astype(np.uint8).reshape(-1, 1, 1, 1).repeat(4, 1).repeat(4, 2))
        labels.append(ids.astype(np.int16))  # label = row id, to check coverage (fits int16 here)
        keys.append(ids)
        start += n
    return CacheSplit(images, labels, keys)


def test_validation_pass_reads_every_row_once_in_order():
    s = BatchStream(split(), 128, shuffle=False, block_rows=100, buffer_blocks=3)
    ys = np.concatenate([y for _, y in s.epoch()])
    assert ys.tolist() == list(range(2000))
    assert len(s) == 16


def test_training_shuffle_is_seeded_full_and_differs_by_epoch():
    s = BatchStream(split(), 100, shuffle=True, seed=3, block_rows=64, buffer_blocks=4)
    e0 = np.concatenate([y for _, y in s.epoch(0)])
    assert sorted(e0.tolist()) == list(range(2000))  # one full pass, nothing lost
    assert np.array_equal(
        e0,
        np.concatenate(
            [y for _, y in BatchStream(split(), 100, shuffle=True, seed=3, block_rows=64, buffer_blocks=4).epoch(0)]
        ),
    )
    assert not np.array_equal(e0, np.concatenate([y for _, y in s.epoch(1)]))
    # rows from different shards mix within a batch
    first = next(s.epoch(0))[1]
    assert len(np.unique(np.searchsorted([1000, 1700], first, side="right"))) > 1


def test_images_follow_their_labels_and_steps_param():
    s = BatchStream(split(), 50, shuffle=True, steps=7)
    batches = list(s.epoch(0))
    assert len(batches) == 7 and all(len(y) == 50 for _, y in batches)
    for x, y in batches:
        assert np.array_equal(x[:, 0, 0, 0], (y.astype(np.int64) % 251).astype(np.uint8))


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        BatchStream(CacheSplit([], [], []), 10, shuffle=True)


@pytest.mark.parametrize(
    "batch,block_rows,buffer_blocks,steps", [(128, 100, 3, None), (300, 64, 2, 9), (7, 500, 1, 40)]
)
def test_batches_span_buffer_boundaries_whatever_the_sizes(batch, block_rows, buffer_blocks, steps):
    val = BatchStream(split(), batch, shuffle=False, steps=steps, block_rows=block_rows, buffer_blocks=buffer_blocks)
    got = list(val.epoch(0))
    n = min(len(val), -(-2000 // batch))  # validation: one pass at most
    assert len(got) == n and all(len(y) == batch for _, y in got[:-1])
    assert np.concatenate([y for _, y in got]).tolist() == list(range(2000))[: n * batch]
    train = BatchStream(
        split(), batch, shuffle=True, seed=1, steps=steps, block_rows=block_rows, buffer_blocks=buffer_blocks
    )
    got = list(train.epoch(0))
    assert len(got) == len(train) and all(len(y) == batch for _, y in got)
    ys = np.concatenate([y for _, y in got])[:2000]
    assert len(np.unique(ys)) == len(ys)  # within one pass, no row twice
    for x, y in got:
        assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous
        assert np.array_equal(x[:, 0, 0, 0], (y.astype(np.int64) % 251).astype(np.uint8))


def test_tf_dataset_yields_the_streams_batches():
    tf = pytest.importorskip("tensorflow")
    from doodle.batches.batching import tf_dataset

    s = BatchStream(split(), 96, shuffle=True, seed=5, steps=30, block_rows=100, buffer_blocks=3)
    want = list(s.epoch(0)) + list(s.epoch(1))
    got = list(tf_dataset(s, repeat=True).take(len(want)).as_numpy_iterator())
    assert [len(y) for _, y in got] == [96] * 60
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.uint8 and gy.dtype == np.int32
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)
    val = BatchStream(split(), 128, shuffle=False)
    got_val = list(tf_dataset(val, repeat=False).as_numpy_iterator())
    assert [len(y) for _, y in got_val] == [128] * 15 + [80]
    assert np.concatenate([y for _, y in got_val]).tolist() == list(range(2000))
    del tf


# glibc's allocator statistics (malloc.h, glibc >= 2.33): hblks counts the chunks that have their own mmap.
_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


def _has_mallinfo2() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except (ValueError, OSError):
        return False


# Run in a fresh process: the allocator state is per process, and TensorFlow sets its threshold once.
# The probe asks glibc where one block goes: larger than all free heap memory (so no free chunk or
# heap top can hold it and malloc must get new memory), smaller than the 32 MiB threshold the fix
# sets. glibc maps it on its own (hblks + 1) if and only if it is at or above the mmap threshold.
_MMAP_PROBE_SCRIPT = r"""
import ctypes, json, sys

import doodle.batches.batching as d
from doodle.batches.batching import tf_dataset
from doodle.batches.stream import BatchStream
from doodle.core.malloc import MMAP_THRESHOLD_MAX, set_thresholds
from tests.batches.test_cache_stream import _MALLINFO2_FIELDS, split

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def probe():
    info = libc.mallinfo2()
    size = info.fordblks + (1 << 20)
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks - info.hblks
    libc.free(block)
    return {"size": size, "mapped": mapped}

# Pinned first, so that what follows does not depend on glibc's dynamic threshold (which moves with
# whatever this process freed before): only TensorFlow's setting can lower it now.
set_thresholds(mmap_bytes=MMAP_THRESHOLD_MAX, trim_bytes=2 * MMAP_THRESHOLD_MAX)
seen = {"pinned": probe()}
if sys.argv[1] == "unfixed":  # TensorFlow's own from_generator, as tf_dataset is without the fix
    d.restore_malloc_thresholds = lambda: False
batches = iter(tf_dataset(BatchStream(split(), 100, shuffle=True, seed=0), repeat=True))
for _ in range(3):  # builds TensorFlow's generator kernel, which sets the threshold
    next(batches)
del batches  # its prefetch thread ends: nothing allocates beside the probe
seen["iterated"] = probe()
print(json.dumps({**seen, "limit": MMAP_THRESHOLD_MAX}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2); the allocator setting is glibc's")
def test_tf_dataset_undoes_tensorflows_mmap_threshold():
    """TensorFlow's generator kernel sets ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``: after it, a
    block of a few MiB is mapped on its own (and unmapped when freed, so its pages fault in again on
    every allocation). tf_dataset puts the threshold back to 32 MiB, so the same block comes from
    the heap. Checked in glibc's own count of mapped chunks, with and without the fix."""
    seen = {}
    for mode in ("fixed", "unfixed"):
        out = subprocess.run(
            [sys.executable, "-c", _MMAP_PROBE_SCRIPT, mode], capture_output=True, text=True, check=True, cwd=REPO
        )
        seen[mode] = json.loads(out.stdout.splitlines()[-1])
    for probes in seen.values():
        if any(p["size"] >= probes["limit"] for p in (probes["pinned"], probes["iterated"])):
            pytest.skip(f"over 31 MiB of free heap memory: no block size tells the thresholds apart {seen}")
        assert probes["pinned"]["mapped"] == 0, seen  # the probe comes from the heap below the threshold
    assert seen["unfixed"]["iterated"]["mapped"] >= 1, seen  # TensorFlow lowered the threshold
    assert seen["fixed"]["iterated"]["mapped"] == 0, seen  # tf_dataset restored it
