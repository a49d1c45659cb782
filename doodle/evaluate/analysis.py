"""Error analysis of a classifier over a split too large to keep its scores: one pass, bounded memory.

The validation split can hold a million drawings over 340 classes. Keeping every probability row
would cost 1.36 GB of float32 (and a stable argsort of it twice that again in int64), so the
evaluation consumes one batch of scores at a time and keeps only what the reports need:

- how often the true class ranked 1st, 2nd and 3rd (MAP@3, top-1 and top-3 follow exactly);
- the C x C confusion counts (per-class accuracy and the most confused pairs follow);
- confidence histogram bin counts, for correct and for wrong predictions;
- the ``mistakes`` most confident mistakes with their images (a bounded selection per batch);
- the (actual, predicted) pairs of the first ``sample_rows`` drawings, for the ``dvc plots``
  confusion template, which wants one row per drawing. The cache's shards are shuffled, so the
  first rows are a uniform sample; a million rows would make a plot file nobody can open.

Memory is O(C^2 + mistakes + sample_rows), whatever the number of drawings. Every result equals
the one-shot computation on all scores at once (tests/evaluate/test_analysis.py); ties are broken as in
``doodle.core.metrics.top_k``: towards the lower class index, and the earlier drawing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle.batches.cache import CacheSplit
from doodle.batches.strokes import concat
from doodle.core.metrics import RANK_WEIGHTS, top_k
from doodle.shard.format import iter_shard_batches

MISTAKES = 40  # the gallery of most confident mistakes
SAMPLE_ROWS = 20_000  # drawings written to reports/confusion.csv, before the class restriction
MAX_CONFUSION_CLASSES = 30  # above this, confusion.csv keeps only the most confused classes
CONFIDENCE_BINS = np.linspace(0, 1, 26)


@dataclass
class Mistake:
    index: int  # row within the split, in cache order
    actual: int
    predicted: int
    confidence: float  # the top-1 probability
    image: np.ndarray


class ErrorAnalysis:
    """Accumulates scores batch by batch (``update``); the properties and methods read the totals."""

    def __init__(
        self,
        n_classes: int,
        mistakes: int = MISTAKES,
        sample_rows: int = SAMPLE_ROWS,
        bins: np.ndarray = CONFIDENCE_BINS,
    ):
        self.n_classes = n_classes
        self.rows = 0
        self.rank_hits = np.zeros(3, np.int64)  # true class ranked 1st, 2nd, 3rd
        self.confusion = np.zeros((n_classes, n_classes), np.int64)  # [actual, predicted]
        self.bins = np.asarray(bins, np.float64)
        self.confidence = {k: np.zeros(len(self.bins) - 1, np.int64) for k in ("correct", "wrong")}
        self.confidence_rows = {"correct": 0, "wrong": 0}  # the legend counts every row, even out of range
        self._max_mistakes = mistakes
        self._mistakes: list[Mistake] = []
        self._sample = np.zeros((2, sample_rows), np.int64)
        self._sampled = 0

    def update(self, labels: np.ndarray, probs: np.ndarray, images: np.ndarray) -> None:
        """Add one batch: true labels (n,), class probabilities (n, C), the images the model saw."""
        labels = np.asarray(labels, np.int64)
        n, c = len(labels), self.n_classes
        if n == 0:
            return
        hits = top_k(probs, 3) == labels[:, None]
        self.rank_hits[: hits.shape[1]] += hits.sum(axis=0)  # fewer than 3 columns when C < 3
        pred = probs.argmax(axis=1)
        self.confusion += np.bincount(labels * c + pred, minlength=c * c).reshape(c, c)
        conf = probs.max(axis=1)
        right = pred == labels
        for name, mask in (("correct", right), ("wrong", ~right)):
            self.confidence[name] += np.histogram(conf[mask], self.bins)[0]
            self.confidence_rows[name] += int(mask.sum())
        self._keep_mistakes(np.flatnonzero(~right), labels, pred, conf, images)
        take = min(n, self._sample.shape[1] - self._sampled)
        self._sample[:, self._sampled : self._sampled + take] = labels[:take], pred[:take]
        self._sampled += take
        self.rows += n

    def _keep_mistakes(self, wrong, labels, pred, conf, images) -> None:
        """Merge this batch's mistakes into the kept ones: highest confidence first, then earliest row.
        Only the kept rows' images are copied, so a batch costs O(batch + mistakes)."""
        if not len(wrong) or not self._max_mistakes:
            return
        kept = self._mistakes
        all_conf = np.concatenate([np.array([m.confidence for m in kept], conf.dtype), conf[wrong]])
        all_index = np.concatenate([np.array([m.index for m in kept], np.int64), self.rows + wrong])
        best = np.lexsort((all_index, -all_conf))[: self._max_mistakes]
        self._mistakes = [
            kept[j]
            if j < len(kept)
            else Mistake(
                int(all_index[j]),
                int(labels[wrong[j - len(kept)]]),
                int(pred[wrong[j - len(kept)]]),
                float(all_conf[j]),
                np.array(images[wrong[j - len(kept)]]),
            )
            for j in best
        ]

    # -- totals --------------------------------------------------------------------------------

    @property
    def map_at_3(self) -> float:
        return float(self.rank_hits @ RANK_WEIGHTS / self.rows) if self.rows else 0.0

    @property
    def top1(self) -> float:
        return float(self.rank_hits[0] / self.rows) if self.rows else 0.0

    @property
    def top3(self) -> float:
        return float(self.rank_hits.sum() / self.rows) if self.rows else 0.0

    def metrics(self) -> dict:
        """Scalars only, so ``dvc metrics show`` fits a terminal; per-class lists go to reports/."""
        return {
            "val_map_at_3": self.map_at_3,
            "val_top1": self.top1,
            "val_top3": self.top3,
            "val_rows": self.rows,
        }

    @property
    def class_counts(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    def per_class_accuracy(self) -> np.ndarray:
        """Top-1 accuracy per true class; NaN for a class with no drawings."""
        counts = self.class_counts
        return np.where(counts > 0, np.diag(self.confusion) / np.maximum(counts, 1), np.nan)

    def ranked_classes(self) -> list[int]:
        """Classes with drawings, worst accuracy first (ties: lower class index first)."""
        counts = self.class_counts
        return [int(i) for i in np.argsort(self.per_class_accuracy(), kind="stable") if counts[i] > 0]

    def confused_pairs(self, k: int = 20) -> list[tuple[int, int, int]]:
        return confused_pairs(self.confusion, k)

    @property
    def mistakes(self) -> list[Mistake]:
        """The most confident mistakes, most confident first."""
        return list(self._mistakes)

    def confusion_sample(self, max_classes: int = MAX_CONFUSION_CLASSES) -> tuple[np.ndarray, np.ndarray]:
        """(actual, predicted) of the first ``sample_rows`` drawings, for one-row-per-drawing plots.

        With more than ``max_classes`` classes a confusion plot is unreadable, so only drawings
        whose true and predicted classes are both among the first ``max_classes`` classes named in
        the (overall) most confused pairs are kept."""
        actual, pred = self._sample[:, : self._sampled]
        if self.n_classes <= max_classes:
            return actual, pred
        top = list(dict.fromkeys(c for a, b, _ in self.confused_pairs() for c in (a, b)))[:max_classes]
        keep = np.isin(actual, top) & np.isin(pred, top)
        return actual[keep], pred[keep]


def confused_pairs(confusion: np.ndarray, k: int = 20) -> list[tuple[int, int, int]]:
    """The k most frequent mistakes as (actual, predicted, count), from a confusion count matrix.
    Ties go to the pair that comes first in row-major order."""
    n = len(confusion)
    m = np.array(confusion, np.int64)
    np.fill_diagonal(m, 0)
    flat = np.argsort(-m, axis=None, kind="stable")[:k]
    return [(int(i // n), int(i % n), int(m.flat[i])) for i in flat if m.flat[i] > 0]


def capped_rows(rows: list[int], limit: int | None) -> list[int]:
    """The rows to read of each file, laid end to end, so that only the first ``limit`` are read
    (None: all): ``capped_rows([5, 5, 5], 7) == [5, 2, 0]``."""
    if limit is None:
        return list(rows)
    cumulative = np.minimum(np.cumsum(rows), limit)
    return np.diff(cumulative, prepend=0).astype(int).tolist()


def iter_batches(
    split: CacheSplit, batch_size: int, limit: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) of ``split`` in cache order, ``batch_size`` rows at a time within each file;
    only its first ``limit`` rows (None: all).

    The images are read with plain file reads into a fresh array per batch, not through the
    memory map: every page read through a map stays mapped into the process, so its resident
    memory would grow by the whole split (1 GB for a million 32x32 drawings, 4 GB at 64x64)
    even though that memory is only page cache."""
    for images, labels, n in zip(split.images, split.labels, capped_rows([len(lab) for lab in split.labels], limit)):
        with _RowReader(images) as read:
            for a in range(0, n, batch_size):
                b = min(a + batch_size, n)
                yield read(a, b), np.asarray(labels[a:b])


def shard_inputs(
    shards: list[Path], rows: list[int], encoder, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(model inputs, labels) of the drawings a cache split holds, made from their shards by
    ``encoder`` (a stroke model's :class:`doodle.drawing.sequence.SequenceParams`), cut into batches
    exactly as :func:`iter_batches` cuts the split: the first ``rows[i]`` drawings of ``shards[i]``
    (the cache file rendered from it), ``batch_size`` at a time within each. One shard's strokes
    are in memory at a time."""
    for path, n in zip(shards, rows):
        groups = list(iter_shard_batches(path, limit=n))  # as the render stage read it into the cache
        if not groups:
            continue
        strokes = concat([g for _, _, g in groups])
        labels = np.concatenate([g for g, _, _ in groups])
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            yield encoder.encode(strokes.take(np.arange(a, b))), labels[a:b]


def shard_batches(encoder, cache: dict, shards_dir: Path, batch_size: int, limit: int | None = None):
    """A fresh iterator of (inputs, labels) batches of the cache's validation drawings made by
    ``encoder`` from the shards they were drawn from (``<prefix>.parquet`` in ``shards_dir``): for
    a stroke model, or an image model drawn otherwise than the cache; the first ``limit`` drawings
    (None: all), cut as :func:`iter_batches` cuts the split (:func:`shard_inputs`)."""
    files = [f for f in cache["files"] if f["split"] == "val"]
    shards = [shards_dir / f"{f['prefix']}.parquet" for f in files]
    return shard_inputs(shards, capped_rows([f["rows"] for f in files], limit), encoder, batch_size)


def aligned_batches(
    split: CacheSplit, batch_size: int, limit: int | None, streams: dict
) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(images, labels, {key: inputs}) of ``split``'s first ``limit`` drawings, batch by batch: the
    cache's images, and the next batch of each of ``streams`` ({key: iterator of (inputs, labels)}
    over the same drawings in the same cuts, :func:`shard_batches`), checked to be the same drawings."""
    for images, labels in iter_batches(split, batch_size, limit):
        xs = {}
        for key, stream in streams.items():
            x, drawn = next(stream, (None, None))
            if drawn is None or not np.array_equal(np.asarray(drawn), np.asarray(labels)):
                raise ValueError(
                    "the validation shards and the render cache disagree on the drawings: rerun `dvc repro`"
                )
            xs[key] = x
        yield images, labels, xs


class _RowReader:
    """Reads rows [a, b) of an array saved as .npy, from its file when it is a whole-file memmap."""

    def __init__(self, array: np.ndarray):
        self.array, self.fh = array, None
        filename, offset = getattr(array, "filename", None), getattr(array, "offset", 0)
        whole_file = (
            filename is not None
            and array.flags.c_contiguous
            and os.path.getsize(filename) == offset + array.nbytes  # not a slice of a bigger map
        )
        if whole_file:
            self.fh, self.offset = open(filename, "rb", buffering=0), offset  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> Callable[[int, int], np.ndarray]:
        return self.read

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.close()

    def read(self, a: int, b: int) -> np.ndarray:
        if self.fh is None:
            return np.array(self.array[a:b])
        out = np.empty((b - a, *self.array.shape[1:]), self.array.dtype)
        row_bytes = out.nbytes // max(b - a, 1)
        self.fh.seek(self.offset + a * row_bytes)
        view, done = memoryview(out).cast("B"), 0
        while done < out.nbytes:  # a raw read may return fewer bytes than asked
            got = self.fh.readinto(view[done:])
            if not got:
                raise OSError(f"{self.array.filename}: ends before row {b}")
            done += got
        return out


def analyse_split(
    split: CacheSplit,
    predict: Callable[[np.ndarray], np.ndarray],
    n_classes: int,
    batch_size: int = 512,
    progress: Callable[[int], object] | None = None,
    inputs: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
    limit: int | None = None,
    **options,
) -> ErrorAnalysis:
    """Run ``predict`` (model inputs -> probabilities) over ``split`` batch by batch and accumulate
    the analysis; ``progress(rows)`` is called after each batch. ``options`` go to ErrorAnalysis.
    The model reads the split's images, or ``inputs``: (inputs, labels) batches of the same drawings
    in the same cuts (:func:`shard_batches`, for a stroke model); the gallery still shows images.
    Only the split's first ``limit`` drawings are scored (None: all)."""
    analysis = ErrorAnalysis(n_classes, **options)
    streams = {} if inputs is None else {"model": iter(inputs)}
    for images, labels, xs in aligned_batches(split, batch_size, limit, streams):
        analysis.update(labels, predict(xs.get("model", images)), images)
        if progress is not None:
            progress(len(labels))
    return analysis
