"""Stage `render`: draw every shard into a memory-mappable image cache (data/cache), and a grid of
validation images as the model sees them (reports/render_samples.png). The run: doodle.render.run."""

from __future__ import annotations

from doodle.core.params import load_section, read_params
from doodle.core.paths import CACHE, REPORTS, SHARDS
from doodle.render.params import RenderSection
from doodle.render.run import run
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cfg = load_section(RenderSection, "render", read_params(args.params))
    cli.report("render", run(SHARDS, CACHE, cfg, REPORTS / "render_samples.png", progress=not args.quiet))


if __name__ == "__main__":
    cli.run(main)
