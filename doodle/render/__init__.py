"""The render stage: every shard drawn into a memory-mappable image cache (``run``), the params.yaml
section that says how (``params``), and the cache's format, which the batch readers and every stage
that scores on the cache read (``format``)."""
