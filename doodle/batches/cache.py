"""The render cache: one memory-mappable ``.npy`` of images per shard, plus labels and key_ids.

Training reads these directly; the full Kaggle set at 64x64x1 is ~204 GB, far larger than RAM,
so nothing here ever loads a whole array: shards are rendered row group by row group into an
``np.lib.format.open_memmap`` and read back with ``mmap_mode="r"``.

Image shards (the pixel sources: digits, numpy_bitmap) pass through into the same format, fitted
to ``render.size`` and ``render.channels`` by :func:`doodle.drawing.images.fit_images`; their manifest
adds ``"content": "images"``. They need the cache for training (``render.train_cache: true``):
training on the fly draws strokes, and image shards have none.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doodle.core.disk import require_free
from doodle.core.params import ParamError, require
from doodle.core.workers import fork_map, worker_count
from doodle.drawing.images import fit_images
from doodle.drawing.raster import RenderParams, render
from doodle.shard.format import iter_image_batches, iter_shard_batches, read_classes, read_manifest, split_shards


@dataclass
class CacheParams:
    """params.yaml section ``render``: how to draw (see RenderParams) and how much to cache."""

    size: int = 32
    line_width: float = 6.0
    channels: int = 1
    antialias: bool = False
    max_per_shard: int | None = None  # rows rendered per shard; null = all
    train_shards: int | None = None  # how many training shards to render; null = all
    workers: int | None = None  # render processes; None = one per CPU core
    train_cache: bool = True  # false: render only the validation shards; train draws on the fly

    def validate(self, where: str = "render") -> None:
        self.raster().validate(where)
        require(
            self.max_per_shard is None or self.max_per_shard > 0,
            f"{where}.max_per_shard",
            "must be a positive number or null",
        )
        require(
            self.train_shards is None or self.train_shards > 0,
            f"{where}.train_shards",
            "must be a positive number or null",
        )
        require(
            self.workers is None or self.workers >= 1,
            f"{where}.workers",
            f"must be >= 1 or null (one per core), got {self.workers}",
        )

    def raster(self) -> RenderParams:
        return RenderParams(self.size, float(self.line_width), self.channels, self.antialias)


def _files(prefix: Path) -> dict[str, Path]:
    return {k: prefix.with_name(f"{prefix.name}.{k}.npy") for k in ("images", "labels", "keys")}


def _render_one(
    shard_path: Path, prefix: Path, rows: int, raster: RenderParams, progress, image_shape: tuple | None = None
) -> dict:
    """Render the first ``rows`` drawings of one shard into ``prefix``.{images,labels,keys}.npy
    (or, for an image shard of ``image_shape`` images, fit them: :func:`doodle.drawing.images.fit_images`)."""
    files = _files(prefix)
    images = np.lib.format.open_memmap(files["images"], mode="w+", dtype=np.uint8, shape=(rows, *raster.shape()))
    labels = np.empty(rows, np.int16)
    keys = np.empty(rows, np.int64)
    done = blank = dots_only = 0
    if image_shape is None:
        batches = iter_shard_batches(shard_path, limit=rows)
    else:
        batches = iter_image_batches(shard_path, tuple(image_shape), limit=rows)
    for lab, key, content in batches:
        n = len(lab)
        if image_shape is None:
            render(content, raster, out=images[done : done + n])
            dots_only += int((content.point_counts() == content.stroke_counts()).sum())
        else:
            fit_images(content, raster, out=images[done : done + n])
        labels[done : done + n] = lab
        keys[done : done + n] = key
        blank += int((images[done : done + n].reshape(n, -1).max(axis=1) == 0).sum())
        done += n
        progress(n)
    images.flush()
    del images
    np.save(files["labels"], labels)
    np.save(files["keys"], keys)
    return {"prefix": prefix.name, "rows": done, "blank": blank, "dots_only": dots_only}


def plan(shard_dir: str | Path, cfg: CacheParams) -> list[dict]:
    """Which shards to render and how many rows each, from the shard manifest."""
    man = read_manifest(shard_dir)
    require_cache_for_images(cfg.train_cache, man)
    # With render.train_cache: false, training draws its batches from the shards (doodle.batches.strokes).
    train = split_shards(man, "train", cfg.train_shards) if cfg.train_cache else []
    jobs = []
    for i, name in enumerate(man["files"]):
        split = "val" if i in man["val_shards"] else "train" if i in train else None
        if split is None:
            continue
        rows = man["rows_per_shard"][i]
        if cfg.max_per_shard is not None:
            rows = min(rows, cfg.max_per_shard)
        jobs.append({"shard": name, "split": split, "rows": rows, "prefix": Path(name).stem})
    return jobs


def require_cache_for_images(train_cache: bool, shard_manifest: dict) -> None:
    """``render.train_cache: false`` trains on strokes drawn on the fly; image shards have no
    strokes, so refuse it for them with the one line that says what to set."""
    if not train_cache and shard_manifest.get("content") == "images":
        raise ParamError(
            f"param render.train_cache: false draws training batches from strokes, but the shards hold images "
            f"({shard_manifest.get('source_kind')} source): set render.train_cache: true"
        )


def cache_bytes(jobs: list[dict], raster: RenderParams) -> int:
    return sum(j["rows"] for j in jobs) * int(np.prod(raster.shape()))


def build_cache(shard_dir: str | Path, out_dir: str | Path, cfg: CacheParams, progress: bool = True, log=print) -> dict:
    """Render the planned shards into ``out_dir`` in parallel processes; write manifest.json.
    Returns the manifest plus ``seconds`` and ``images_per_s``."""
    t0 = time.perf_counter()
    shard_dir, out = Path(shard_dir), Path(out_dir)
    raster = cfg.raster()
    jobs = plan(shard_dir, cfg)
    image_shape = read_manifest(shard_dir).get("image_shape")  # image shards (pixel sources)
    total = sum(j["rows"] for j in jobs)
    size = cache_bytes(jobs, raster)
    # a fresh folder: nothing of an earlier (or killed) run stays beside the new files, and no file is
    # written in place (DVC may have linked the old ones to its cache)
    shutil.rmtree(out, ignore_errors=True)
    require_free(
        out,
        size,
        f"the render cache ({total:,} drawings at {raster.shape()})",
        "render.train_cache: false draws the training batches from the shards instead; "
        "render.max_per_shard or render.train_shards cache fewer",
    )
    out.mkdir(parents=True)
    log(f"render: {len(jobs)} shards, {total:,} drawings at {raster.shape()} -> {size / 1e9:.3f} GB of cache in {out}")
    workers = min(worker_count(cfg.workers), os.cpu_count() or 1)
    with tqdm(total=total, unit="img", desc="render", disable=not progress) as bar:
        rendered = fork_map(
            lambda w, todo, tick: (
                _render_one(shard_dir / j["shard"], out / j["prefix"], j["rows"], raster, tick, image_shape)
                for j in todo
            ),
            jobs,
            workers,
            progress=bar.update,
            what="render",
            hint="lower render.workers",
        )
        results = {r["prefix"]: r for r in rendered}
    seconds = time.perf_counter() - t0
    files = [{"prefix": j["prefix"], "split": j["split"], "rows": results[j["prefix"]]["rows"]} for j in jobs]
    manifest = {
        "render": raster.to_dict(),
        "classes": read_classes(shard_dir / "classes.csv"),
        "files": files,
        "rows": total,
        "blank_images": sum(r["blank"] for r in results.values()),
        "dots_only_drawings": sum(r["dots_only"] for r in results.values()),
    }
    if image_shape is not None:  # stroke caches keep their manifest as it was (same bytes)
        manifest["content"] = "images"
    # no timings in the output: the same shards and params give the same bytes, so DVC does not
    # retrain after a rerun that only took a different time
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {**manifest, "seconds": round(seconds, 3), "images_per_s": round(total / seconds, 1) if seconds else 0.0}


class LabelledRows:
    """What a split of drawings with ``labels`` (a list of arrays, in row order) reports of them:
    shared by the cache's splits and :class:`doodle.batches.strokes.DrawnSplit`."""

    labels: list[np.ndarray]

    @property
    def rows(self) -> int:
        return sum(len(lab) for lab in self.labels)

    def all_labels(self) -> np.ndarray:
        return np.concatenate(self.labels).astype(np.int64) if self.labels else np.zeros(0, np.int64)


@dataclass
class CacheSplit(LabelledRows):
    """Memory-mapped arrays of one split (``train`` or ``val``) of a cache."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    keys: list[np.ndarray]


def read_cache_manifest(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the render stage first (dvc repro render)")
    return json.loads(path.read_text())


def require_same_render(cache: dict, raster: RenderParams, cache_dir: str | Path, whose: str) -> None:
    """Refuse images drawn with other render params than the cache's (``cache``: its manifest).
    The one check for every consumer that puts drawings beside the cache's images: training drawn
    on the fly, the baseline's sample drawn from the shards, a model scored on the cache. A
    mismatch is train/serve skew, so it is an error with the fix, never a warning."""
    if raster.to_dict() != cache["render"]:
        raise ParamError(
            f"{whose} {raster.to_dict()} differ from the render params {cache['render']} of {cache_dir}: "
            "rerun `dvc repro` so that the cache is rendered again"
        )


def open_split(cache_dir: str | Path, split: str) -> CacheSplit:
    """The cache files the render stage marked ``split`` (``train`` or ``val``), memory-mapped."""
    man = read_cache_manifest(cache_dir)
    return open_files(cache_dir, [f["prefix"] for f in man["files"] if f["split"] == split])


def open_files(cache_dir: str | Path, prefixes) -> CacheSplit:
    """The cache files ``prefixes`` (one per shard, e.g. ``shard-003``), memory-mapped, in the order
    given; empty ones are skipped. A cross-validation fold (doodle.train.folds) is such a list of shards."""
    cache_dir = Path(cache_dir)
    man = read_cache_manifest(cache_dir)
    rows = {f["prefix"]: f["rows"] for f in man["files"]}
    missing = [p for p in prefixes if p not in rows]
    if missing:
        raise FileNotFoundError(f"{cache_dir} holds no {', '.join(missing)}: rerun the render stage")
    out = CacheSplit([], [], [])
    for prefix in (p for p in prefixes if rows[p] > 0):
        files = _files(cache_dir / prefix)
        out.images.append(np.load(files["images"], mmap_mode="r"))
        out.labels.append(np.load(files["labels"]))
        out.keys.append(np.load(files["keys"]))
    return out
