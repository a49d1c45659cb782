"""The render cache's format: one memory-mappable ``.npy`` of images per shard, plus labels and
key_ids (``<prefix>.images.npy``, ``.labels.npy``, ``.keys.npy``), and ``manifest.json`` (the render
params, the classes, each file's split and rows). Written by :mod:`doodle.render.run`, read by
:mod:`doodle.batches.cache` and by every stage that scores on the cache."""

from __future__ import annotations

import json
from pathlib import Path

from doodle.core.params import ParamError
from doodle.drawing.raster import RenderParams


def cache_files(prefix: Path) -> dict[str, Path]:
    """The three files of one shard's images (``prefix``: the cache folder / the shard's stem)."""
    return {k: prefix.with_name(f"{prefix.name}.{k}.npy") for k in ("images", "labels", "keys")}


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
