"""Benchmark the shard stage: rows/s and peak memory at two input sizes.

    python -m benchmarks.shard [--sizes 200000 2000000] [--workdir /tmp/doodle-bench-shard]

Each size runs in a fresh process. Its peak memory is sampled over that process and its worker
processes together (sum of PSS; the sum of RSS, which counts pages shared after fork once per
process, is printed too). Last line: one JSON object.
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

from benchmarks.common import TreeMemory, last_line, replicate_kaggle


def child(folder: str, out: str, workers: str) -> None:
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    t0 = time.perf_counter()
    cfg = ShardParams(workers=int(workers) if workers != "all" else None)
    stats = write_shards(resolve_source(folder), out, cfg, progress=False)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows": stats["rows_in"],
                "seconds": seconds,
                "rows_per_s": stats["rows_in"] / seconds,
                "workers": stats["workers"],
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    p.add_argument("--workdir", default="/tmp/doodle-bench-shard")
    p.add_argument("--workers", default="all", help="shard.workers: a number, or 'all' (one per core)")
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.shard", "--child", str(src), str(out), a.workers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        with TreeMemory(proc.pid) as mem:
            stdout, stderr = proc.communicate()
        if proc.returncode:
            sys.exit(stderr)
        res = json.loads(stdout.strip().splitlines()[-1])
        res["peak_pss_mb"] = mem.peak_pss_mb
        res["peak_rss_sum_mb"] = mem.peak_rss_mb
        size_mb = sum(f.stat().st_size for f in (src / "train_simplified").iterdir()) / 1e6
        print(
            f"{n:>10,} rows ({size_mb:,.0f} MB CSV): {res['seconds']:.1f}s, {res['rows_per_s']:,.0f} rows/s "
            f"({res['rows_per_s'] / (os.cpu_count() or 1):,.0f} per core, {res['workers']} workers), "
            f"peak memory {mem.peak_pss_mb:.0f} MB (PSS; RSS sum {mem.peak_rss_mb:.0f} MB)",
            flush=True,
        )
        results[str(n)] = {
            "rows_per_s": round(res["rows_per_s"]),
            "peak_pss_mb": round(res["peak_pss_mb"], 1),
            "peak_rss_sum_mb": round(res["peak_rss_sum_mb"], 1),
        }
    sizes = [str(n) for n in a.sizes]
    if len(sizes) >= 2:
        for n in sizes[1:]:
            ratio = results[n]["peak_pss_mb"] / results[sizes[0]]["peak_pss_mb"]
            print(f"peak memory at {int(n):,} rows / at {int(sizes[0]):,} rows: {ratio:.3f}")
        results["pss_ratio"] = round(results[sizes[-1]]["peak_pss_mb"] / results[sizes[0]]["peak_pss_mb"], 3)
    results["cores"] = os.cpu_count()
    last_line(results)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
