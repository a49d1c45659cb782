"""The baseline stage's run, a classical PCA + SVM (scikit-learn) on a bounded, seeded subsample of the training images,
scored on the validation split the network is scored on.

Why a baseline: a network's MAP@3 means little alone. The same validation drawings scored by a model
with no learned features say how much of the score the network earns (and a network below it is broken).

The training sample is ``baseline.max_rows`` rows drawn uniformly without replacement (seeded) from the
training set the network sees: the first ``render.max_per_shard`` rows of the first
``render.train_shards`` training shards. Kernel SVMs cost O(rows^2) to fit, so the bound is what keeps
the stage fast, and memory holds only the sample (``max_rows x size^2 x channels`` bytes), never a split.
The rows come from the render cache, or with ``render.train_cache: false`` (the cache then holds only
validation images) are drawn from ``data/shards`` with the one rasterizer and the render params: the same
drawings and, byte for byte, the same images either way (tested), so a baseline always runs.

Features are the pixels scaled to [0, 1] and flattened (channels included). PCA is not whitened by
default: an RBF kernel compares Euclidean distances, and whitening stretches the low-variance
components (mostly noise at the pixel level) to the weight of the main ones. Measured on the embedded
sample (5,000 rows, 50 components): val accuracy 0.864 unwhitened against 0.851 whitened at C = 10.

MAP@3 needs a ranking, not just a label: ``SVC.decision_function`` (one-vs-rest shape: one-vs-one votes,
ties broken by the summed confidences) ranks every class. Platt probabilities would cost five more fits
(internal cross-validation) for the same purpose. The validation split is scored in batches, so memory does
not grow with it; ``baseline.val_max_rows`` scores only its first rows (a uniform sample: shards are shuffled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from doodle.batches.cache import CacheSplit, open_split
from doodle.core.metrics import RANK_WEIGHTS
from doodle.core.params import ParamError, require
from doodle.core.report import StageResult
from doodle.drawing.raster import render
from doodle.drawing.strokes import STROKE_COLUMNS
from doodle.render.format import read_cache_manifest, require_same_render
from doodle.render.params import RenderSection
from doodle.shard.format import read_manifest, read_strokes, row_groups, split_shards

SCORE_BATCH = 2048  # validation rows per decision_function call: bounds memory, not the result


#: What runs are compared by (metrics/baseline.json): the keys metrics/eval.json uses.
HEADLINE = ("val_map_at_3", "val_top1", "val_top3")


@dataclass
class BaselineParams:
    """params.yaml section ``baseline``: the classical model scored beside the network."""

    max_rows: int = 10000  # training rows sampled (uniform, seeded); SVM fit time grows ~ quadratically
    val_max_rows: int | None = 5000  # validation rows scored (the first N); null = all (hours for Kaggle's 250k)
    pca_components: int = 50
    whiten: bool = False  # see the module doc: unwhitened suits an RBF kernel on pixels
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = "rbf"
    svm_c: float = 10.0
    gamma: float | Literal["scale", "auto"] = "scale"  # RBF/poly/sigmoid width; scikit-learn's names
    seed: int = 0

    def validate(self, where: str = "baseline") -> None:
        require(self.max_rows >= 2, f"{where}.max_rows", f"must be >= 2, got {self.max_rows}")
        require(
            self.val_max_rows is None or self.val_max_rows >= 1,
            f"{where}.val_max_rows",
            f"must be a positive number or null, got {self.val_max_rows}",
        )
        require(self.pca_components >= 1, f"{where}.pca_components", f"must be >= 1, got {self.pca_components}")
        require(self.svm_c > 0, f"{where}.svm_c", f"must be > 0, got {self.svm_c}")
        require(
            isinstance(self.gamma, str) or self.gamma > 0,
            f"{where}.gamma",
            f"must be > 0, scale or auto, got {self.gamma}",
        )


# --------------------------------------------------------------------------- the training sample
def sample_rows(total: int, k: int, seed: int) -> np.ndarray:
    """``min(k, total)`` distinct row numbers in ``0..total-1``, uniform and seeded, ascending (so
    the rows are read in storage order). Memory is O(k) for k << total (numpy uses Floyd's algorithm)."""
    if k >= total:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False)).astype(np.int64)


def _gather(parts: list[tuple[object, int]], rows: np.ndarray, read, out: np.ndarray, labels: np.ndarray, tick) -> None:
    """Fill ``out``/``labels`` with the global ``rows`` (ascending) of ``parts``, a list of (part, n)
    laid end to end; ``read(part, local_rows, out_slice)`` returns the labels of ``local_rows``."""
    start = done = 0
    for part, n in parts:
        lo, hi = np.searchsorted(rows, [start, start + n])
        if hi > lo:
            labels[done : done + hi - lo] = read(part, rows[lo:hi] - start, out[done : done + hi - lo])
            done += hi - lo
            tick(hi - lo)
        start += n


def cache_sample(split: CacheSplit, cfg: BaselineParams, tick=lambda n: None) -> tuple[np.ndarray, np.ndarray]:
    """The sampled training images and labels from the render cache's (memory-mapped) train split."""
    rows = sample_rows(split.rows, cfg.max_rows, cfg.seed)
    out = np.empty((len(rows), *split.images[0].shape[1:]), np.uint8) if split.images else np.empty((0,), np.uint8)
    labels = np.empty(len(rows), np.int64)

    def read(part: int, local: np.ndarray, dest: np.ndarray) -> np.ndarray:
        dest[...] = split.images[part][local]  # reads only these rows of the memory map
        return split.labels[part][local]

    _gather([(i, len(lab)) for i, lab in enumerate(split.labels)], rows, read, out, labels, tick)
    return out, labels


def training_groups(shard_dir: str | Path, render_cfg: RenderSection) -> list[tuple[Path, int, int]]:
    """(parquet file, row group, rows) of the training set, in the order the render cache lays it out
    (doodle.render.run.plan): the first ``render.train_shards`` training shards in file order, the first
    ``render.max_per_shard`` rows of each. Only footers are read."""
    shard_dir = Path(shard_dir)
    man = read_manifest(shard_dir)
    picked = set(split_shards(man, "train", render_cfg.train_shards))
    groups = []
    for i, name in enumerate(man["files"]):
        if i not in picked:
            continue
        meta = pq.read_metadata(shard_dir / name)
        missing = set(STROKE_COLUMNS) - set(meta.schema.to_arrow_schema().names)
        if missing:  # an image shard (a pixel source): nothing to draw, the cache must hold the images
            raise ParamError(
                f"param render.train_cache: false draws the training sample from strokes, but {shard_dir / name} "
                f"has no {', '.join(sorted(missing))} column: set render.train_cache: true"
            )
        groups += row_groups(shard_dir / name, render_cfg.max_per_shard)
    return groups


def shard_sample(
    shard_dir: str | Path, render_cfg: RenderSection, cfg: BaselineParams, tick=lambda n: None
) -> tuple[np.ndarray, np.ndarray]:
    """The sampled training drawings, read from the stroke shards (only the row groups holding a
    sampled row, one at a time) and drawn with ``render`` and the render params."""
    groups = training_groups(shard_dir, render_cfg)
    rows = sample_rows(sum(n for _, _, n in groups), cfg.max_rows, cfg.seed)
    raster = render_cfg.raster()
    out = np.empty((len(rows), *raster.shape()), np.uint8)
    labels = np.empty(len(rows), np.int64)

    def read(group: tuple[Path, int, int], local: np.ndarray, dest: np.ndarray) -> np.ndarray:
        strokes, group_labels = read_strokes(*group)
        render(strokes.take(local), raster, out=dest)
        return group_labels[local]

    _gather([(grp, grp[2]) for grp in groups], rows, read, out, labels, tick)
    return out, labels


# --------------------------------------------------------------------------- the model
def features(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, S, S, C) -> float32 (n, S*S*C) in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


@dataclass
class Baseline:
    """A fitted PCA + SVC over ``n_classes`` classes (some possibly absent from the sample)."""

    pca: object
    svm: object
    n_classes: int
    fit_seconds: dict = field(default_factory=dict)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(n, n_classes) ranking scores; a class the sample did not hold ranks last (-inf)."""
        d = self.svm.decision_function(self.pca.transform(features(images)))
        seen = self.svm.classes_
        if d.ndim == 1:  # two classes: scikit-learn returns the score of the second only
            d = np.stack([-d, d], axis=1)
        out = np.full((len(images), self.n_classes), -np.inf)
        out[:, seen] = d
        return out


def fit(
    images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: BaselineParams, where: str = "baseline"
) -> Baseline:
    """PCA then SVC on the sample. Fails naming the param when the sample cannot support the model."""
    from sklearn.decomposition import PCA  # here, not at import: the stage's one-line param errors stay fast
    from sklearn.svm import SVC

    n, dim = len(labels), int(np.prod(images.shape[1:]))
    limit = min(n, dim)
    require(
        cfg.pca_components <= limit,
        f"{where}.pca_components",
        f"must be <= min(training rows {n:,}, features {dim:,}) = {limit:,}, got {cfg.pca_components}",
    )
    if len(np.unique(labels)) < 2:
        raise ParamError(f"param {where}.max_rows: the {n} sampled rows hold fewer than 2 classes; sample more rows")
    t0 = time.perf_counter()
    pca = PCA(cfg.pca_components, whiten=cfg.whiten, random_state=cfg.seed)
    reduced = pca.fit_transform(features(images))
    t1 = time.perf_counter()
    svm = SVC(C=cfg.svm_c, kernel=cfg.kernel, gamma=cfg.gamma, decision_function_shape="ovr", cache_size=500)
    svm.fit(reduced, labels)
    t2 = time.perf_counter()
    return Baseline(pca, svm, n_classes, {"pca": round(t1 - t0, 3), "svm": round(t2 - t1, 3)})


def true_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each row's true class, ties towards the lower class index, as
    ``doodle.core.metrics.top_k`` ranks, without sorting every row."""
    labels = np.asarray(labels, np.int64)
    own = scores[np.arange(len(labels)), labels][:, None]
    lower = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > own).sum(axis=1) + ((scores == own) & lower).sum(axis=1)


def score_split(
    model: Baseline, split: CacheSplit, limit: int | None = None, tick=lambda n: None, batch: int = SCORE_BATCH
) -> dict:
    """Top-1, top-3, MAP@3 and per-class top-1 over the first ``limit`` rows of ``split`` (all if None),
    in batches of ``batch`` rows: memory is O(batch + classes), whatever the split's size."""
    c = model.n_classes
    rank_hits, per_class, correct = np.zeros(3, np.int64), np.zeros(c, np.int64), np.zeros(c, np.int64)
    left = split.rows if limit is None else min(limit, split.rows)
    rows, t0 = 0, time.perf_counter()
    for images, labels in zip(split.images, split.labels):
        for a in range(0, min(len(labels), left), batch):
            b = min(a + batch, len(labels), a + left)
            y = labels[a:b].astype(np.int64)
            rank = true_rank(model.scores(np.asarray(images[a:b])), y)
            rank_hits += np.bincount(rank[rank < 3], minlength=3)
            per_class += np.bincount(y, minlength=c)
            correct += np.bincount(y[rank == 0], minlength=c)
            rows += b - a
            left -= b - a
            tick(b - a)
    seconds = time.perf_counter() - t0
    hits = rank_hits / max(rows, 1)
    return {
        "val_map_at_3": float(hits @ RANK_WEIGHTS),
        "val_top1": float(hits[0]),
        "val_top3": float(hits.sum()),
        "val_rows": rows,
        "predict_seconds": round(seconds, 3),
        "predict_images_per_s": round(rows / seconds, 1) if seconds else 0.0,
        "per_class_top1": np.divide(correct, per_class, out=np.zeros(c), where=per_class > 0),
        "per_class_rows": per_class,
    }


# --------------------------------------------------------------------------- the whole run
def run(
    cache_dir: str | Path,
    shard_dir: str | Path,
    cfg: BaselineParams,
    render_cfg: RenderSection,
    progress: bool = True,
    log=print,
) -> StageResult:
    """Sample, fit and score: every number for reports/baseline.json, the headline (metrics/baseline.json:
    the keys metrics/eval.json uses, so `dvc metrics show` prints the baseline in the network's columns)
    and the stage's line; ``progress``: tqdm bars over the sampled and the scored rows."""

    def bar(desc: str, total: int) -> tqdm:
        return tqdm(total=total, unit="img", desc=desc, disable=not progress)

    man = read_cache_manifest(cache_dir)
    classes = man["classes"]
    val = open_split(cache_dir, "val")
    if val.rows == 0:
        raise FileNotFoundError(f"{cache_dir} holds no validation images: check shard.val_shards and rerun render")
    t0 = time.perf_counter()
    if render_cfg.train_cache:
        source, split = "cache", open_split(cache_dir, "train")
        total = split.rows
        with bar("baseline sample", min(cfg.max_rows, total)) as b:
            images, labels = cache_sample(split, cfg, b.update)
    else:
        require_same_render(man, render_cfg.raster(), cache_dir, "param render: the render params")
        source = "shards"
        total = sum(n for _, _, n in training_groups(shard_dir, render_cfg))
        with bar("baseline sample", min(cfg.max_rows, total)) as b:
            images, labels = shard_sample(shard_dir, render_cfg, cfg, b.update)
    sample_seconds = time.perf_counter() - t0
    if total == 0:
        raise FileNotFoundError(f"no training rows in {cache_dir if source == 'cache' else shard_dir}: check render")
    log(
        f"baseline: PCA({cfg.pca_components}{', whitened' if cfg.whiten else ''}) + SVC({cfg.kernel}, "
        f"C={cfg.svm_c}) on {len(labels):,} of {total:,} training rows (from the {source})"
    )
    model = fit(images, labels, len(classes), cfg)
    del images
    limit = val.rows if cfg.val_max_rows is None else min(cfg.val_max_rows, val.rows)
    with bar("baseline score", limit) as b:
        scored = score_split(model, val, cfg.val_max_rows, b.update)
    per_class = scored.pop("per_class_top1")
    counts = scored.pop("per_class_rows")
    values = {
        **{k: scored.pop(k) for k in ("val_map_at_3", "val_top1", "val_top3")},
        "train_rows": len(labels),
        "train_rows_available": total,
        "train_source": source,
        "classes": len(classes),
        "classes_in_sample": len(np.unique(labels)),
        "min_rows_per_class_in_sample": int(np.bincount(labels, minlength=len(classes)).min()),
        "pca_components": cfg.pca_components,
        "explained_variance": round(float(model.pca.explained_variance_ratio_.sum()), 4),
        "support_vectors": int(model.svm.n_support_.sum()),
        "sample_seconds": round(sample_seconds, 3),
        "pca_fit_seconds": model.fit_seconds["pca"],
        "svm_fit_seconds": model.fit_seconds["svm"],
        "fit_seconds": round(model.fit_seconds["pca"] + model.fit_seconds["svm"], 3),
        **scored,
        "per_class_top1": {
            classes[i]: round(float(per_class[i]), 4) for i in np.argsort(per_class, kind="stable") if counts[i]
        },
    }
    return StageResult(values, HEADLINE, summary(values))


def summary(values: dict) -> str:
    return (
        f"baseline: val MAP@3 {values['val_map_at_3']:.4f}, top-1 {values['val_top1']:.4f}, "
        f"top-3 {values['val_top3']:.4f} on {values['val_rows']:,} drawings; fit {values['fit_seconds']:.1f}s on "
        f"{values['train_rows']:,} rows ({values['explained_variance']:.0%} of the variance in "
        f"{values['pca_components']} components), predict {values['predict_seconds']:.1f}s"
    )
