"""K-fold cross-validation over the shards, and the out-of-fold (OOF) predictions of an ensemble.

Folds follow the shards: fold ``f`` of ``K`` validates on the shards ``i`` with ``i % K == f`` and
trains on the others. A drawing's shard depends only on its key_id and ``shard.count``
(:func:`doodle.shard.format.shard_of`), so its fold does too (:func:`fold_of_keys`): adding data never
moves a drawing to another fold, and a fold's validation set only grows. Whole shards also keep the
render cache's memory-mapped files intact: a fold is a list of shards, nothing is copied.

With ``K > 1`` the folds are drawn from every shard with images, and ``shard.val_shards`` does not
choose what is held out (it still names the shards the evaluate and baseline stages score on).
With ``render.train_cache: true`` those are the shards in the render cache (memory-mapped, nothing
copied); with ``false`` each fold trains and validates on images drawn on the fly from its shards'
strokes (:class:`doodle.batches.strokes.DrawnSplit`), so cross-validating all of Kaggle's drawings
needs no image cache. ``render.train_shards`` leaves shards out of every fold either way.

The OOF file (:class:`OofWriter`) holds, for every drawing of every fold's validation shards, the
mean probabilities of that fold's members (its seeds): each drawing is predicted only by models
that never trained on it, which is what stacking and an honest ensemble score need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from doodle.batches.cache import CacheSplit, open_files
from doodle.core.disk import require_free
from doodle.core.metrics import StreamingScores, map_at_3, top_k
from doodle.core.params import ParamError
from doodle.shard.format import shard_of, split_shards

from .params import too_few_shards

if TYPE_CHECKING:  # a type only: this module plans folds and gathers OOF rows; doodle.train.ensemble draws them
    from doodle.batches.strokes import DrawnSplit

#: OOF columns keep the probabilities of this many classes per drawing, best first: every class
#: of a data set with up to 20 classes (the sample's 16), the 20 best of Kaggle's 340.
OOF_TOP_K = 20
CHUNK_ROWS = 16384  # rows per OOF parquet row group and per accumulator pass


def fold_of_keys(key_ids: np.ndarray, shard_count: int, folds: int) -> np.ndarray:
    """The fold that validates on each key_id: its shard modulo ``folds``. It depends on the key_id,
    ``shard.count`` and ``train.folds`` only, never on which other drawings exist."""
    return shard_of(np.asarray(key_ids, np.int64), shard_count) % folds


def member_name(fold: int, seed_index: int) -> str:
    """The file stem of an ensemble member under models/<name>/members/."""
    return f"fold{fold}-seed{seed_index}"


@dataclass(frozen=True)
class Fold:
    """One fold: the shards it trains and validates on, by file stem (``shard-003``, which is also
    the shard's render-cache prefix), and the shard indices it holds out."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    val_shards: tuple[int, ...]


def plan_folds(
    cache_manifest: dict, shard_manifest: dict, folds: int, train_cache: bool, train_shards: int | None = None
) -> list[Fold]:
    """The ``folds`` folds (``folds > 1``; see the module doc) over the shards there are images of:
    with ``train_cache`` the shards in the render cache, else (images drawn on the fly from the
    strokes) the validation shards and the training shards ``render.train_shards`` picks
    (:func:`doodle.shard.format.split_shards`).

    Raises a one-line ParamError naming the params to change when the folds cannot be made: more
    folds than shards, or a fold with nothing to train or validate on."""
    count = int(shard_manifest["count"])
    if folds > count:
        raise ParamError(too_few_shards(folds, count))
    index = {Path(name).stem: i for i, name in enumerate(shard_manifest["files"])}
    if train_cache:
        where = "the render cache"
        usable = [(f["prefix"], index[f["prefix"]]) for f in cache_manifest["files"] if f["rows"] > 0]
    else:
        where = "the shards (render.train_cache: false)"
        picked = sorted(split_shards(shard_manifest, "val") + split_shards(shard_manifest, "train", train_shards))
        rows = shard_manifest["rows_per_shard"]
        usable = [(Path(shard_manifest["files"][i]).stem, i) for i in picked if rows[i] > 0]
    out = []
    for f in range(folds):
        val = tuple(p for p, i in usable if i % folds == f)
        train = tuple(p for p, i in usable if i % folds != f)
        held = tuple(i for i in range(count) if i % folds == f)
        if not val or not train:
            what = "validate on" if not val else "train on"
            raise ParamError(
                f"param train.folds: fold {f} of {folds} has nothing to {what} in {where} (it holds "
                f"out shards {list(held)}; there are {[p for p, _ in usable]}): set render.train_shards: "
                "null so every shard is used, or lower train.folds"
            )
        out.append(Fold(f, train, val, held))
    return out


def reference_fold(folds: list[Fold], val_shards: list[int]) -> int:
    """The fold whose seed-0 member becomes models/<name>/model.keras (what the evaluate stage scores on
    the ``shard.val_shards`` split): the fold holding out the first validation shard, so that the
    evaluate stage's score is out-of-fold whenever all of ``shard.val_shards`` lie in one fold."""
    first = val_shards[0] if val_shards else 0
    return next((f.index for f in folds if first in f.val_shards), 0)


def open_fold(cache_dir: str | Path, fold: Fold) -> tuple[CacheSplit, CacheSplit]:
    """(train, val) memory-mapped render-cache splits of ``fold``."""
    return open_files(cache_dir, fold.train), open_files(cache_dir, fold.val)


def fold_shard_paths(shard_dir: str | Path, stems: tuple[str, ...]) -> list[Path]:
    """The parquet files of a fold's shards (``Fold.train`` or ``Fold.val``), to draw on the fly."""
    return [Path(shard_dir) / f"{stem}.parquet" for stem in stems]


class FoldAccumulator:
    """The sum of a fold's members' probabilities for each of its validation drawings, in a
    memory-mapped file: Kaggle's 50M drawings x 340 classes would not fit in memory (a fold of 10M
    drawings is 13.6 GB of float32). Rebuilt on every run, so a resumed ensemble never counts a
    member twice."""

    def __init__(self, path: Path, split: CacheSplit | DrawnSplit, classes: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.split = split
        require_free(
            self.path, split.rows * classes * 4, f"the out-of-fold sums of {split.rows:,} drawings x {classes} classes"
        )
        self.sums = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(split.rows, classes))
        self.members = 0

    def add(self, predict, batch_size: int) -> dict:
        """Add ``predict(images) -> probabilities`` over the split, in order; returns that member's own
        scores over the whole split (:meth:`doodle.core.metrics.StreamingScores.results`)."""
        labels, scores, at = self.split.all_labels(), StreamingScores(), 0
        for images in self.split.images:
            for a in range(0, len(images), batch_size):
                probs = np.asarray(predict(images[a : a + batch_size]), np.float32)
                self.sums[at : at + len(probs)] += probs
                scores.add(labels[at : at + len(probs)], probs)
                at += len(probs)
        self.members += 1
        return scores.results()

    def close(self) -> None:
        del self.sums
        if self.path.exists():
            os.remove(self.path)


class OofWriter:
    """``oof.parquet``: one row per validation drawing of every fold, grouped by fold.

    Columns: ``key_id``, ``fold``, ``label`` (the true class, an index into the model's classes),
    ``top_labels`` and ``top_probs``: the :data:`OOF_TOP_K` most probable classes and their mean
    probability over the fold's members, best first. Also keeps the OOF MAP@3 over all drawings."""

    def __init__(self, path: Path, classes: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.classes = classes
        self.k = min(OOF_TOP_K, classes)
        self.schema = pa.schema(
            [
                ("key_id", pa.int64()),
                ("fold", pa.int16()),
                ("label", pa.int16()),
                ("top_labels", pa.list_(pa.int16(), self.k)),
                ("top_probs", pa.list_(pa.float32(), self.k)),
            ]
        )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.rows = 0
        self.score_sum = 0.0
        self.per_fold: dict[int, float] = {}

    def add_fold(self, fold: int, acc: FoldAccumulator) -> float:
        """Write fold ``fold``'s rows from its accumulator (the mean over its members); returns the
        fold's OOF MAP@3."""
        import pyarrow as pa

        split = acc.split
        keys, labels = np.concatenate(split.keys), split.all_labels()
        fold_sum = 0.0
        for a in range(0, split.rows, CHUNK_ROWS):
            probs = np.asarray(acc.sums[a : a + CHUNK_ROWS]) / max(acc.members, 1)
            top = top_k(probs, self.k)
            lab = labels[a : a + CHUNK_ROWS]
            n = len(lab)
            fold_sum += map_at_3(lab, top) * n
            table = pa.table(
                {
                    "key_id": pa.array(keys[a : a + n], pa.int64()),
                    "fold": pa.array(np.full(n, fold, np.int16)),
                    "label": pa.array(lab.astype(np.int16)),
                    "top_labels": pa.FixedSizeListArray.from_arrays(pa.array(top.astype(np.int16).ravel()), self.k),
                    "top_probs": pa.FixedSizeListArray.from_arrays(
                        pa.array(np.take_along_axis(probs, top, 1).astype(np.float32).ravel()), self.k
                    ),
                },
                schema=self.schema,
            )
            self.writer.write_table(table)
        self.rows += split.rows
        self.score_sum += fold_sum
        self.per_fold[fold] = fold_sum / split.rows if split.rows else 0.0
        return self.per_fold[fold]

    @property
    def map_at_3(self) -> float:
        """MAP@3 of the OOF probabilities over every drawing written."""
        return self.score_sum / self.rows if self.rows else 0.0

    def close(self) -> None:
        """Finish the file and put it in place (a killed run never leaves half a file)."""
        self.writer.close()
        os.replace(self.tmp, self.path)


def read_oof(path: Path, classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key_ids, labels, probabilities (n, ``classes``)) of an :class:`OofWriter` file, sorted by
    key_id. The file keeps each row's top :data:`OOF_TOP_K` classes (every class when there are no
    more); the others read as 0. ``classes`` None: the file's top-k width."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    keys, labels = t["key_id"].to_numpy(), t["label"].to_numpy().astype(np.int64)
    top_labels = np.stack(t["top_labels"].to_numpy(zero_copy_only=False)).astype(np.int64)
    top_probs = np.stack(t["top_probs"].to_numpy(zero_copy_only=False))
    probs = np.zeros((len(keys), classes or top_labels.shape[1]), np.float64)
    np.put_along_axis(probs, top_labels, top_probs, axis=1)
    order = np.argsort(keys)
    return keys[order], labels[order], probs[order]


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, standard deviation) of ``values``; the population deviation (ddof 0, as
    scikit-learn's cross-validation reports), 0 for a single value."""
    arr = np.asarray(values, np.float64)
    return (float(arr.mean()), float(arr.std())) if len(arr) else (0.0, 0.0)


def summarize_members(results: list[dict], oof: OofWriter, reference: str) -> dict:
    """The ensemble's figures for metrics/ and reports/train/<name>.json: the members' val MAP@3 mean and
    standard deviation over all members (``val_map_at_3``, ``val_map_at_3_std``), across folds (of
    each fold's mean over seeds) and across seeds (within a fold, averaged), and the out-of-fold
    MAP@3 of the whole file. ``results``: one dict per member (name, fold, seed, metrics)."""
    scores = [r["val_map_at_3"] for r in results]
    mean, std = spread(scores)
    folds = sorted({r["fold"] for r in results})
    by_fold = {f: [r["val_map_at_3"] for r in results if r["fold"] == f] for f in folds}
    fold_means = [spread(v)[0] for v in by_fold.values()]
    return {
        "val_map_at_3": mean,
        "val_map_at_3_std": std,
        "oof_map_at_3": oof.map_at_3,
        "val_accuracy": spread([r["val_accuracy"] for r in results])[0],
        "val_top3": spread([r["val_top3"] for r in results])[0],
        "epochs_run": spread([r["epochs_run"] for r in results])[0],
        "members": len(results),
        "val_map_at_3_fold_std": spread(fold_means)[1],
        "val_map_at_3_seed_std": spread([spread(v)[1] for v in by_fold.values()])[0],
        "fold_val_map_at_3": {str(f): m for f, m in zip(folds, fold_means)},
        "fold_oof_map_at_3": {str(f): v for f, v in sorted(oof.per_fold.items())},
        "oof_rows": oof.rows,
        "reference_member": reference,
        "member_results": results,
    }
