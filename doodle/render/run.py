"""The render stage's run: the planned shards drawn into the cache in parallel processes.

Training reads the cache directly; the full Kaggle set at 64x64x1 is ~204 GB, far larger than RAM,
so nothing here ever loads a whole array: shards are rendered row group by row group into an
``np.lib.format.open_memmap`` (and read back with ``mmap_mode="r"``, doodle.batches.cache).

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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doodle.core.disk import require_free
from doodle.core.plots import image_grid
from doodle.core.report import StageResult
from doodle.core.workers import fork_map, worker_count
from doodle.drawing.images import fit_images
from doodle.drawing.raster import RenderParams, render
from doodle.shard.format import iter_image_batches, iter_shard_batches, read_classes, read_manifest, split_shards

from .format import cache_files
from .params import RenderSection, require_cache_for_images

GRID_IMAGES = 48  # validation images in the sample grid


def run(shard_dir: Path, out_dir: Path, cfg: RenderSection, grid: Path, progress: bool = True) -> StageResult:
    """Render the cache (:func:`build_cache`) and draw a grid of validation images as the model sees
    them (``grid``); the figures for reports/render.json (nothing to compare runs by: no headline)."""
    man = build_cache(shard_dir, out_dir, cfg, progress)
    val = [f for f in man["files"] if f["split"] == "val" and f["rows"]]
    if val:
        files = cache_files(Path(out_dir) / val[0]["prefix"])
        images, labels = np.load(files["images"], mmap_mode="r"), np.load(files["labels"])
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(labels), size=min(GRID_IMAGES, len(labels)), replace=False))
        title = f"what the model sees: {cfg.size}px, {cfg.channels} channel(s)"
        image_grid(np.asarray(images[idx]), [man["classes"][int(k)] for k in labels[idx]], grid, title=title)
    values = {k: man[k] for k in ("rows", "blank_images", "dots_only_drawings", "seconds", "images_per_s")}
    line = (
        f"render: {man['rows']:,} images in {man['seconds']:.1f}s ({man['images_per_s']:,.0f}/s), "
        f"{man['blank_images']} blank, {man['dots_only_drawings']} dots-only; grid -> {grid}"
    )
    return StageResult(values, (), line)


def _render_one(
    shard_path: Path, prefix: Path, rows: int, raster: RenderParams, progress, image_shape: tuple | None = None
) -> dict:
    """Render the first ``rows`` drawings of one shard into ``prefix``.{images,labels,keys}.npy
    (or, for an image shard of ``image_shape`` images, fit them: :func:`doodle.drawing.images.fit_images`)."""
    files = cache_files(prefix)
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


def plan(shard_dir: str | Path, cfg: RenderSection) -> list[dict]:
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


def cache_bytes(jobs: list[dict], raster: RenderParams) -> int:
    return sum(j["rows"] for j in jobs) * int(np.prod(raster.shape()))


def build_cache(
    shard_dir: str | Path, out_dir: str | Path, cfg: RenderSection, progress: bool = True, log=print
) -> dict:
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
