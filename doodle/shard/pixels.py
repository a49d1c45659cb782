"""Pass 1 of the shard stage for the pixel sources (:mod:`doodle.sources.pixels`): check each
input file's rows in blocks, quarantine the bad ones with their reason, keep the first
``shard.max_per_class`` good rows of each class, and append the rest to the shard spill files,
which pass 2 (:mod:`doodle.shard.shuffle`) orders and writes as image shards, as it does for strokes.

A numpy_bitmap folder is read a class file at a time (one file per worker); a Digit Recognizer
folder is one train.csv holding every class, read by one process.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from doodle.sources.pixels import iter_bitmap_rows, iter_digit_rows

from .format import Quarantine, image_column, shard_of
from .shuffle import Spills


def shard_pixel_file(job, index: int, spills: Spills, on_bytes) -> dict:
    """Check one pixel input file (a numpy_bitmap class, or the digits' train.csv with every
    class) and append its good rows to the spills; quarantine the rest; return its counts."""
    cfg, path = job.cfg, job.source.input_files()[index]
    quarantine = Quarantine(job.parts_dir / f"read-{index:05d}.csv")
    out = {"index": index, "rows_in": 0, "filtered_unrecognized": 0, "truncated": 0}
    taken = np.zeros(len(job.classes), np.int64)
    cap = cfg.max_per_class
    if job.source.kind == "digits":
        blocks = iter_digit_rows(path, True, job.image_shape, cfg.block_mb << 20)
        mine = np.arange(len(job.classes))
    else:
        word_label = job.classes.index(path.stem)
        block_rows = max(1, (cfg.block_mb << 20) // int(np.prod(job.image_shape)))
        blocks = iter_bitmap_rows(path, word_label, block_rows, limit=cap)  # all its rows are of its class
        mine = np.array([word_label])
    done_bytes, file_bytes = 0, path.stat().st_size
    for block in blocks:
        out["rows_in"] += len(block)
        step = min(block.nbytes, file_bytes - done_bytes)
        done_bytes += step
        on_bytes(step)
        quarantine.add(block.rejected(job.classes))
        keep = block.ok
        if cap is not None:  # the first ``cap`` good rows of each class, in file order
            for c in np.unique(block.labels[keep]):
                mask = keep & (block.labels == c)
                keep = keep & ~(mask & (np.cumsum(mask) > cap - taken[c]))
                taken[c] += int((keep & (block.labels == c)).sum())
        idx = np.flatnonzero(keep)
        if len(idx):
            batch = pa.record_batch(
                [
                    pa.array(block.key_id[idx]),
                    pa.array(block.labels[idx]),
                    image_column(block.images[idx]),
                    pa.array((index << 40) + block.position[idx]),
                ],
                schema=job.layout.spill_schema,
            )
            spills.add(batch, shard_of(block.key_id[idx], cfg.count))
        if cap is not None and (taken[mine] >= cap).all():
            break
    on_bytes(file_bytes - done_bytes)
    out["truncated"] = int((taken[mine] >= cap).sum()) if cap is not None else 0
    out["rejected"] = quarantine.close()
    return out
