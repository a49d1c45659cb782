"""Stage `shard`: stream data.source, clean, shuffle and shard it into parquet (data/shards)."""

from __future__ import annotations

from doodle.core.params import load_section, read_params
from doodle.core.paths import SHARDS
from doodle.shard.run import ShardParams, write_shards
from doodle.sources.folder import DataParams, resolve_source
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    params = read_params(args.params)
    data = load_section(DataParams, "data", params)
    cfg = load_section(ShardParams, "shard", params)
    source = resolve_source(data.source, data.kind)
    content = "image shards" if source.pixels else "shards"
    print(
        f"shard: {source.kind} source {source.root} with {len(source.classes)} classes -> "
        f"{cfg.count} {content} in {SHARDS}, "
        f"{min(cfg.resolved_workers(), len(source.input_files()))} worker process(es)"
    )
    stats = write_shards(source, SHARDS, cfg, progress=not args.quiet)
    details = {k: stats[k] for k in ("rows_in", "rows_out", "rejected_total", "seconds", "rows_per_s", "workers")}
    details |= {k: stats[k] for k in ("read_seconds", "shuffle_write_seconds", "spill_bytes")}  # the two passes
    cli.write_metrics("shard", details, headline=("rows_out", "rejected_total"))
    bad = ", ".join(f"{k} {v}" for k, v in stats["rejected"].items() if v) or "none"
    print(
        f"shard: {stats['rows_in']:,} rows in, {stats['rows_out']:,} out, {stats['rejected_total']:,} "
        f"rejected ({bad}; see {SHARDS / 'quarantine.csv'}), {stats['seconds']:.1f}s, "
        f"{stats['rows_per_s']:,.0f} rows/s"
    )


if __name__ == "__main__":
    cli.run(main)
