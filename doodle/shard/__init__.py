"""The shard stage: stream a source into shuffled, deduplicated parquet shards in two passes
(``run``: pass 1 routes cleaned blocks to per-shard spills; ``shuffle``: pass 2 orders each shard),
pixel sources through the same passes (``pixels``), and the shard format every later stage reads
(``format``: columns, manifest, which shards are train and validation)."""
