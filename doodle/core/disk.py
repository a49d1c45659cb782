"""Free disk, checked before a stage writes gigabytes: one line naming what needs how much where.

At Kaggle's size a stage writes many gigabytes (the shard stage's spill files and shards, the
render cache, the out-of-fold accumulator of a K-fold ensemble). Running out of disk half way
leaves a half-written output and an error deep inside Arrow or numpy; checking first costs one
``statvfs``. Where two writes land on the same file system (the spills and the shards, say) the
caller adds them up (:func:`same_filesystem`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserError

GB = 1e9
MARGIN_BYTES = 256 << 20  # left free beyond the estimate: logs, DVC's state, the page cache's writeback


class DiskFullError(UserError, OSError):
    """Not enough free disk for what a stage is about to write."""


def existing_parent(path: str | Path) -> Path:
    """``path`` or its nearest existing ancestor (a folder about to be created has none yet)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(existing_parent(path)).free


def same_filesystem(a: str | Path, b: str | Path) -> bool:
    return os.stat(existing_parent(a)).st_dev == os.stat(existing_parent(b)).st_dev


def require_free(path: str | Path, need: float, what: str, hint: str = "") -> None:
    """Raise a one-line :class:`DiskFullError` unless ``path``'s file system has ``need`` bytes
    (plus :data:`MARGIN_BYTES`) free."""
    free = free_bytes(path)
    if need + MARGIN_BYTES > free:
        raise DiskFullError(
            f"not enough free disk for {what} at {existing_parent(path)}: needs about {need / GB:.1f} GB, "
            f"{free / GB:.1f} GB free" + (f"; {hint}" if hint else "")
        )
