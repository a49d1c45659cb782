"""Stage `render`: draw every shard into a memory-mappable image cache (data/cache)."""

from __future__ import annotations

import numpy as np

from doodle.batches.cache import CacheParams, build_cache, open_split
from doodle.core.params import load_section, read_params
from doodle.core.paths import CACHE, REPORTS, SHARDS
from doodle.core.plots import image_grid
from stages import cli

GRID = REPORTS / "render_samples.png"


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cfg = load_section(CacheParams, "render", read_params(args.params))
    man = build_cache(SHARDS, CACHE, cfg, progress=not args.quiet)
    val = open_split(CACHE, "val")
    classes = man["classes"]
    n = min(48, val.rows)
    if n:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(val.labels[0]), size=min(n, len(val.labels[0])), replace=False))
        image_grid(
            np.asarray(val.images[0][idx]),
            [classes[int(k)] for k in val.labels[0][idx]],
            GRID,
            title=f"what the model sees: {cfg.size}px, {cfg.channels} channel(s)",
        )
    details = {k: man[k] for k in ("rows", "blank_images", "dots_only_drawings", "seconds", "images_per_s")}
    cli.write_metrics("render", details, headline=())  # nothing to compare runs by: reports/render.json
    print(
        f"render: {man['rows']:,} images in {man['seconds']:.1f}s ({man['images_per_s']:,.0f}/s), "
        f"{man['blank_images']} blank, {man['dots_only_drawings']} dots-only; grid -> {GRID}"
    )


if __name__ == "__main__":
    cli.run(main)
