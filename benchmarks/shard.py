"""Benchmark the shard stage: rows/s and peak memory at two input sizes.

    python benchmarks/shard.py [--sizes 200000 2000000] [--workdir /tmp/doodle-bench-shard]

Each size runs in a fresh process, so its peak RSS is its own. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import last_line, peak_rss_mb, replicate_kaggle  # noqa: E402


def child(folder: str, out: str) -> None:
    from doodle.shards import ShardParams, write_shards
    from doodle.sources import resolve_source
    t0 = time.perf_counter()
    stats = write_shards(resolve_source(folder), out, ShardParams(), progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"rows": stats["rows_in"], "seconds": seconds, "rows_per_s": stats["rows_in"] / seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    p.add_argument("--workdir", default="/tmp/doodle-bench-shard")
    a = p.parse_args()
    work = Path(a.workdir)
    results = {}
    for n in a.sizes:
        src = work / f"in-{n}"
        if not (src / "train_simplified").is_dir():
            t0 = time.perf_counter()
            replicate_kaggle(src, n)
            print(f"built {n:,}-row Kaggle-layout input in {time.perf_counter() - t0:.0f}s", flush=True)
        out = work / f"out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        r = subprocess.run([sys.executable, __file__, "--child", str(src), str(out)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        if r.returncode:
            sys.exit(r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        size_mb = sum(f.stat().st_size for f in (src / "train_simplified").iterdir()) / 1e6
        print(f"{n:>10,} rows ({size_mb:,.0f} MB CSV): {res['seconds']:.1f}s, {res['rows_per_s']:,.0f} rows/s "
              f"({res['rows_per_s'] / (os.cpu_count() or 1):,.0f} per core), peak RSS {res['peak_rss_mb']:.0f} MB",
              flush=True)
        results[str(n)] = {"rows_per_s": round(res["rows_per_s"]), "peak_rss_mb": round(res["peak_rss_mb"], 1)}
    sizes = [str(n) for n in a.sizes]
    if len(sizes) >= 2:
        results["rss_ratio"] = round(results[sizes[-1]]["peak_rss_mb"] / results[sizes[0]]["peak_rss_mb"], 3)
    results["cores"] = os.cpu_count()
    last_line(results)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
