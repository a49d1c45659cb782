"""Stage `shard`: stream data.source, clean, shuffle and shard it into parquet (data/shards). The run:
doodle.shard.run."""

from __future__ import annotations

from doodle.core.params import load_section, read_params
from doodle.core.paths import SAMPLE, SHARDS
from doodle.shard.params import ShardParams
from doodle.shard.run import run
from doodle.sources.folder import DataParams, resolve_source
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    params = read_params(args.params)
    data = load_section(DataParams, "data", params)
    cfg = load_section(ShardParams, "shard", params)  # every param checked before the source is looked at
    source = resolve_source(data.source, data.kind, SAMPLE)
    cli.report("shard", run(source, SHARDS, cfg, progress=not args.quiet))


if __name__ == "__main__":
    cli.run(main)
