"""params.yaml section ``render``: how the cache is drawn (the rasterizer's params) and how much of it
is cached; and what those params refuse against the shards."""

from __future__ import annotations

from dataclasses import dataclass

from doodle.core.params import ParamError, require
from doodle.drawing.raster import RenderParams


@dataclass
class RenderSection:
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

    def draws_as(self, encoder) -> bool:
        """Whether ``encoder`` (a model's input) is this section's raster: the model reads the cache's
        images (its validation split, and with ``train_cache`` its training images too); any other
        (a stroke model's, an image model's own ``train.render``) is drawn from the shards."""
        return encoder == self.raster()


def require_cache_for_images(train_cache: bool, shard_manifest: dict) -> None:
    """``render.train_cache: false`` trains on strokes drawn on the fly; image shards have no
    strokes, so refuse it for them with the one line that says what to set."""
    if not train_cache and shard_manifest.get("content") == "images":
        raise ParamError(
            f"param render.train_cache: false draws training batches from strokes, but the shards hold images "
            f"({shard_manifest.get('source_kind')} source): set render.train_cache: true"
        )
