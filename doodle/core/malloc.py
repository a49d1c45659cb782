"""glibc's allocator thresholds, set from Python (``mallopt``): the two settings this project
needs, each measured, and one place that knows how to reach glibc. With another C library both do
nothing."""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # where glibc's dynamic mmap threshold stops on 64-bit


def limit_heap_retention() -> None:
    """In a worker process: make glibc return freed block buffers to the OS.

    glibc raises its mmap threshold to the size of the largest freed buffer (up to 32 MB), after
    which block-sized buffers come from the heap and stay resident when freed: measured, a
    shard reader's RSS settled ~60 MB higher with 2 MB blocks than with 0.3 MB ones, and this
    brings it back to the same level for any block size. Meant for forked workers, whose malloc
    state is their own; with another C library it does nothing."""
    set_thresholds(mmap_bytes=1 << 20, trim_bytes=2 << 20)  # a fixed 1 MB also stops the dynamic raise


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
    return set_thresholds(mmap_bytes=MMAP_THRESHOLD_MAX, trim_bytes=2 * MMAP_THRESHOLD_MAX)


def set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """Blocks above ``mmap_bytes`` get their own mmap; free heap tops above ``trim_bytes`` go back
    to the OS. True if glibc took both."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, trim_bytes)  # set even if the first was refused
    return bool(mmap_set and trim_set)


@functools.cache
def _glibc():
    """The C library when it is glibc (whose ``mallopt`` this tunes), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):
        return None
