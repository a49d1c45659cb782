"""Write a folder in exactly the layout and formats of Kaggle's Quick, Draw! competition, at any scale.

    python -m benchmarks.kaggle_folder --scale 0.01 --out /tmp/kf01 [--seed 0] [--raw-fraction 0.1] [--workers N]

Why: the pipeline's claims about the full competition (49.7M train rows in 340 files, ~24 GB;
memory that does not grow with the input; the shard stage's rows/s; what hashing the mount
costs) can only be checked on a folder of that size and shape, and the real one is not here.
The shared sample (../shared/data/quickdraw-kaggle: ~20 drawings a class) is the seed: every
output row is one of its real drawings of that class, varied per copy (a random scale in
[0.8, 1.0] and shift inside 0..255, ±1 jitter on about a fifth of the coordinates, one stroke
dropped from one copy in ten that has two or more), so no stage is flattered by repetition: a
cache, a dedup, a compressor or a model sees as many distinct drawings as rows.

What is written (scale ``s``), byte for byte in Kaggle's formats (CRLF line ends, the drawing
JSON quoted with ", " separators, 16-digit key_ids, ``True``/``False``, timestamps such as
``2017-03-03 17:58:50.53529``):

- ``train_simplified/<word>.csv`` for the 340 real class words, round(s × 49,707,579) rows in
  all, spread over the classes by a seeded log-normal draw (like the real ~100k-300k a class);
- ``test_simplified.csv``: round(s × 112,199) rows (at least 340) from the shared test drawings;
- ``sample_submission.csv`` for those key_ids, with the real sample's three labels;
- ``train_raw/<word>.csv`` and ``test_raw.csv``: stand-ins (repeated simplified rows) for what the
  real mount also holds and the pipeline must not read, ``raw_fraction`` × the simplified bytes,
  so that anything hashing the whole folder pays for them as it would on Kaggle. No
  ``test_labels.csv``: the competition has none.

How: a numba kernel formats whole blocks of rows straight into a uint8 buffer that is written
block by block (4 MB), so memory does not depend on the scale; the class files are spread over
``workers`` forked processes. Each file draws from its own generator seeded by (seed, file
index), and each key_id is a fixed bijection of the row's global index, so the same (scale,
seed) gives the same bytes whatever the number of workers. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import KAGGLE, last_line, real_rows
from benchmarks.kaggle_rows import MASK51, fill_block, key_ids

#: The full competition's sizes (Kaggle's train_simplified and test_simplified.csv).
FULL_TRAIN_ROWS = 49_707_579
FULL_TEST_ROWS = 112_199
TRAIN_HEADER = b"countrycode,drawing,key_id,recognized,timestamp,word\r\n"
TEST_HEADER = b"key_id,countrycode,drawing\r\n"
SUBMISSION_HEADER = b"key_id,word\r\n"
#: Bytes a train row takes on average at scale 1 (~24 GB / 49.7M rows), for the disk check.
TRAIN_ROW_BYTES = 490
TEST_ROW_BYTES = 470
BLOCK_BYTES = 4 << 20
#: Spread of the rows over the classes: log-normal weights, clipped (real counts: ~100k-300k).
CLASS_SIGMA, CLASS_CLIP = 0.25, (0.65, 2.1)


class KaggleFolderError(Exception):
    """The folder cannot be written (existing output, no room, missing seed drawings, bad scale)."""


# --------------------------------------------------------------------------- seed drawings
@dataclass
class Drawings:
    """Base drawings packed flat for the kernel, with what each row of them carries."""

    xs: np.ndarray  # uint8 (points,)
    ys: np.ndarray
    spts: np.ndarray  # int64 (strokes + 1,): point offsets of each stroke
    sdraw: np.ndarray  # int64 (drawings + 1,): stroke offsets of each drawing
    bbox: np.ndarray  # int64 (drawings, 4): min x, min y, max x, max y
    recognized: np.ndarray  # uint8 (drawings,)
    row_bytes: np.ndarray  # int64 (drawings,): an upper bound on a formatted copy's drawing

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """What :func:`fill_block` takes of them, in its order."""
        return self.xs, self.ys, self.spts, self.sdraw, self.bbox, self.recognized

    @classmethod
    def pack(cls, texts: list[str], recognized: list[bool]) -> Drawings:
        xs, ys, spts, sdraw, bbox, bound = [], [], [0], [0], [], []
        for text in texts:
            d = json.loads(text)
            points = 0
            for sx, sy in d:
                xs += sx
                ys += sy
                points += len(sx)
                spts.append(spts[-1] + len(sx))
            sdraw.append(sdraw[-1] + len(d))
            allx = [v for s in d for v in s[0]]
            ally = [v for s in d for v in s[1]]
            bbox.append((min(allx), min(ally), max(allx), max(ally)))
            bound.append(10 * points + 12 * len(d) + 8)  # "255, " per coordinate, brackets per stroke
        return cls(
            np.array(xs, np.uint8),
            np.array(ys, np.uint8),
            np.array(spts, np.int64),
            np.array(sdraw, np.int64),
            np.array(bbox, np.int64).reshape(-1, 4),
            np.array(recognized, np.uint8),
            np.array(bound, np.int64),
        )


def _codes(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Country codes (one entry a real row, so drawing one follows their real frequencies)."""
    enc = [v.encode() for v in values]
    off = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(e) for e in enc], out=off[1:])
    return np.frombuffer(b"".join(enc) or b"\0", np.uint8).copy(), off


@dataclass
class Seeds:
    """The shared folder's drawings: train by class (sorted words), test, and the sample's labels."""

    words: list[str]
    train: Drawings
    class_bases: list[np.ndarray]  # per class: its drawings' indices in ``train``
    train_cc: tuple[np.ndarray, np.ndarray]
    test: Drawings
    test_cc: tuple[np.ndarray, np.ndarray]
    submission_words: str

    @classmethod
    def load(cls, folder: Path = KAGGLE) -> Seeds:
        if not (folder / "train_simplified").is_dir() or not (folder / "test_simplified.csv").is_file():
            raise KaggleFolderError(f"the seed drawings are missing: expected Kaggle's layout at {folder}")
        rows = real_rows(folder)
        words = sorted(rows)
        texts, rec, codes, bases = [], [], [], []
        for w in words:
            bases.append(np.arange(len(texts), len(texts) + len(rows[w]), dtype=np.int64))
            for r in rows[w]:
                codes.append(r[0])
                texts.append(r[1])
                rec.append(r[3] == "True")
        with (folder / "test_simplified.csv").open(newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            test = [(r[1], r[2]) for r in reader]
        submission_words = "The_Eiffel_Tower airplane donut"
        sub = folder / "sample_submission.csv"
        if sub.is_file():
            with sub.open(newline="") as fh:
                reader = csv.reader(fh)
                next(reader)
                submission_words = next(reader, ["", submission_words])[1]
        return cls(
            words,
            Drawings.pack(texts, rec),
            bases,
            _codes(codes),
            Drawings.pack([d for _, d in test], [True] * len(test)),
            _codes([c for c, _ in test]),
            submission_words,
        )


# --------------------------------------------------------------------------- plan
def class_counts(total: int, classes: int, seed: int) -> np.ndarray:
    """``total`` rows spread over ``classes`` by seeded log-normal weights; each class >= 1 row,
    summing exactly to ``total`` (largest remainders)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1A55]))
    w = np.clip(np.exp(rng.normal(0.0, CLASS_SIGMA, classes)), *CLASS_CLIP)
    share = (total - classes) * w / w.sum()
    counts = np.floor(share).astype(np.int64)
    rest = int(total - classes - counts.sum())
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    return counts + 1


def sizes(scale: float) -> tuple[int, int]:
    """(train rows, test rows) at ``scale``: Kaggle's counts × scale, each at least one a class."""
    return max(round(scale * FULL_TRAIN_ROWS), 340), max(round(scale * FULL_TEST_ROWS), 340)


@dataclass
class _Job:
    """What every file's writer needs; set in the parent before the workers fork."""

    out: Path
    seeds: Seeds
    counts: np.ndarray  # rows of each file: the classes, then the test file
    firsts: np.ndarray  # global index of each file's first row
    seed: int
    k0: np.uint64
    k1: np.uint64
    raw_fraction: float


_JOB: _Job | None = None


def _file_state(seed: int, index: int) -> np.ndarray:
    return np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)


def _fill(buf, state, todo, first, job: _Job, test, word, bases, d: Drawings, codes, reserve) -> tuple[int, int]:
    """:func:`fill_block` with the drawings and the key constants unpacked."""
    return fill_block(buf, state, todo, first, job.k0, job.k1, test, word, bases, *d.arrays, *codes, reserve)


def _write_file(index: int) -> tuple[int, int, int, int]:
    """Write file ``index`` (a class, or the test file after the last class) and its raw
    stand-in; returns (index, rows, bytes, raw bytes)."""
    job = _JOB
    s = job.seeds
    test = int(index == len(s.words))  # an int, not a bool: one compiled signature
    d = s.test if test else s.train
    if test:
        bases = np.arange(len(d.row_bytes), dtype=np.int64)
        word = np.zeros(0, np.uint8)
        path, raw_path, header = job.out / "test_simplified.csv", job.out / "test_raw.csv", TEST_HEADER
        cc, cc_off = s.test_cc
    else:
        bases = s.class_bases[index]
        name = s.words[index]
        word = np.frombuffer(name.encode(), np.uint8).copy()  # writable: one numba signature
        path = job.out / "train_simplified" / f"{name}.csv"
        raw_path, header = job.out / "train_raw" / f"{name}.csv", TRAIN_HEADER
        cc, cc_off = s.train_cc
    reserve = int(d.row_bytes[bases].max()) + len(word) + 128
    state = _file_state(job.seed, index)
    buf = np.empty(max(BLOCK_BYTES, 4 * reserve), np.uint8)
    todo, first = int(job.counts[index]), int(job.firsts[index])
    written = len(header)
    with path.open("wb", buffering=0) as fh:
        fh.write(header)
        while todo:
            nbytes, rows = _fill(buf, state, todo, first, job, test, word, bases, d, (cc, cc_off), reserve)
            fh.write(memoryview(buf)[:nbytes])
            written += nbytes
            todo -= rows
            first += rows
    raw = _write_raw(raw_path, header, bytes(buf[:nbytes]), job.raw_fraction * written) if job.raw_fraction > 0 else 0
    return index, int(job.counts[index]), written, raw


def _write_raw(path: Path, header: bytes, rows: bytes, target: float) -> int:
    """A stand-in of about ``target`` bytes: the header, then ``rows`` (whole rows) repeated."""
    written = 0
    with path.open("wb", buffering=0) as fh:
        fh.write(header)
        written = len(header)
        while written < target:
            chunk = rows if target - written >= len(rows) else rows[: rows.rfind(b"\n", 0, int(target - written)) + 1]
            if not chunk:
                chunk = rows[: rows.find(b"\n") + 1]
            fh.write(chunk)
            written += len(chunk)
    return written


def _write_submission(path: Path, job: _Job, test_index: int) -> int:
    line_end = f",{job.seeds.submission_words}\r\n".encode()
    n, first = int(job.counts[test_index]), int(job.firsts[test_index])
    written = 0
    with path.open("wb") as fh:
        fh.write(SUBMISSION_HEADER)
        written += len(SUBMISSION_HEADER)
        for a in range(0, n, 1 << 16):
            keys = key_ids(first + a, min(n - a, 1 << 16), job.k0, job.k1)
            chunk = b"".join(b"%d%s" % (k, line_end) for k in keys.tolist())
            fh.write(chunk)
            written += len(chunk)
    return written


def _check_out(out: Path, need: float) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KaggleFolderError(f"{out} exists and is not an empty folder; choose a new --out or remove it")
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise KaggleFolderError(f"not enough free disk at {probe}: need ~{need / 1e9:.2f} GB, {free / 1e9:.2f} GB free")


def _write_files(job: _Job, workers: int, progress: bool) -> tuple[int, int, int]:
    """Every class file and the test file (with their raw stand-ins) over ``workers`` forked
    processes, largest first so that they finish together; (train, test, raw) bytes."""
    global _JOB
    from tqdm import tqdm

    n_classes = len(job.seeds.words)
    order = sorted(range(n_classes + 1), key=lambda i: -job.counts[i])
    train_bytes = test_bytes = raw_bytes = 0
    bar = tqdm(total=int(job.counts.sum()), unit="row", unit_scale=True, disable=not progress, desc="kaggle folder")
    _JOB, pool = job, None
    try:
        if workers == 1:
            results = map(_write_file, order)
        else:
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(workers)
            results = pool.imap_unordered(_write_file, order)
        for index, rows, nbytes, raw in results:
            if index == n_classes:
                test_bytes += nbytes
            else:
                train_bytes += nbytes
            raw_bytes += raw
            bar.update(rows)
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        if pool is not None:  # a worker failed: stop the others
            pool.terminate()
        bar.close()
        _JOB = None
    return train_bytes, test_bytes, raw_bytes


def write_kaggle_folder(
    out: Path, scale: float, seed: int = 0, raw_fraction: float = 0.1, workers: int | None = None, progress: bool = True
) -> dict:
    """Write the competition's folder at ``scale`` (1.0: 49.7M train rows, ~24 GB) into ``out``
    (new or empty); returns counts, bytes and timings. See the module docstring."""
    out = Path(out)
    if not scale > 0:
        raise KaggleFolderError(f"scale must be > 0, got {scale}")
    if raw_fraction < 0:
        raise KaggleFolderError(f"raw_fraction must be >= 0, got {raw_fraction}")
    train_rows, test_rows = sizes(scale)
    simplified = train_rows * TRAIN_ROW_BYTES + test_rows * (TEST_ROW_BYTES + 40)
    _check_out(out, simplified * (1 + raw_fraction) + (1 << 20))

    t0 = time.perf_counter()
    seeds = Seeds.load()
    n_classes = len(seeds.words)
    counts = np.append(class_counts(train_rows, n_classes, seed), test_rows)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    k0, k1 = (np.uint64(k) & MASK51 for k in np.random.SeedSequence([seed, 0x4B3]).generate_state(2, np.uint64))
    job = _Job(out, seeds, counts, firsts, seed, k0, k1, raw_fraction)
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), n_classes + 1))
    (out / "train_simplified").mkdir(parents=True, exist_ok=True)
    if raw_fraction > 0:
        (out / "train_raw").mkdir()
    key_ids(0, 1, k0, k1)  # compile (or load the cache) once, before forking
    empty = np.zeros(0, np.uint8)
    _fill(empty, _file_state(0, 0), 0, 0, job, 0, empty, seeds.class_bases[0], seeds.train, seeds.train_cc, 0)
    setup = time.perf_counter() - t0

    t1 = time.perf_counter()
    train_bytes, test_bytes, raw_bytes = _write_files(job, workers, progress)
    submission_bytes = _write_submission(out / "sample_submission.csv", job, n_classes)
    seconds = time.perf_counter() - t1
    total_bytes = train_bytes + test_bytes + raw_bytes + submission_bytes
    return {
        "scale": scale,
        "seed": seed,
        "workers": workers,
        "classes": n_classes,
        "train_rows": train_rows,
        "test_rows": test_rows,
        "train_bytes": train_bytes,
        "test_bytes": test_bytes,
        "raw_bytes": raw_bytes,
        "submission_bytes": submission_bytes,
        "setup_seconds": round(setup, 3),
        "seconds": round(seconds, 3),
        "rows_per_s": round((train_rows + test_rows) / seconds),
        "mb_per_s": round(total_bytes / 1e6 / seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, required=True, help="fraction of the competition: 1.0 is 49.7M train rows")
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-fraction", type=float, default=0.1, help="train_raw/ + test_raw.csv size; 0: none")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    a = p.parse_args(argv)
    try:
        res = write_kaggle_folder(a.out, a.scale, a.seed, a.raw_fraction, a.workers)
    except KaggleFolderError as e:
        sys.exit(f"kaggle_folder: {e}")
    simplified_mb = (res["train_bytes"] + res["test_bytes"]) / 1e6
    print(
        f"wrote {res['train_rows']:,} train rows in {res['classes']} files + {res['test_rows']:,} test rows "
        f"({simplified_mb:,.0f} MB, raw stand-ins {res['raw_bytes'] / 1e6:,.0f} MB) to {a.out} "
        f"in {res['seconds']:.1f}s: "
        f"{res['rows_per_s']:,} rows/s, {res['mb_per_s']:,.0f} MB/s ({res['workers']} workers)",
        flush=True,
    )
    last_line(res)


if __name__ == "__main__":
    main()
