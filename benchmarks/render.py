"""Benchmark the rasterizer against the public baseline's renderer, on one core.

    python -m benchmarks.render

Drawings: ../shared/data/quickdraw-kaggle when present, else the embedded sample. "ours" renders
parsed strokes (as the render stage reads them from parquet); "ours incl. parse" also parses the
JSON text (as predict does). The reference parses with ast.literal_eval and draws with cv2.line
(width 6) on 256x256, then cv2.resize. Last line: one JSON object.
"""

from __future__ import annotations

import os
import time

os.environ["NUMBA_NUM_THREADS"] = "1"

import cv2

from benchmarks.common import last_line, real_rows, source_folder
from benchmarks.reference import render_reference
from doodle.drawing.parse import parse_drawings
from doodle.drawing.raster import RenderParams, render


def best_rate(fn, n, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    cv2.setNumThreads(1)
    texts = [r[1] for rows in real_rows().values() for r in rows]
    print(f"{len(texts):,} drawings from {source_folder()}")
    strokes = parse_drawings(texts).strokes
    ref = best_rate(lambda: [render_reference(t, 64) for t in texts], len(texts), repeat=1)
    results = {"drawings": len(texts), "reference_per_s": round(ref)}
    for name, p in [
        ("64x64x1", RenderParams(64)),
        ("128x128x1", RenderParams(128)),
        ("64x64x3", RenderParams(64, channels=3)),
        ("64x64x1_aa", RenderParams(64, antialias=True)),
    ]:
        render(strokes, p)  # compile
        rate = best_rate(lambda p=p: render(strokes, p), len(texts))
        results[f"ours_{name}_per_s"] = round(rate)
        print(f"ours {name:>11}: {rate:>10,.0f} drawings/s  ({rate / ref:.1f}x reference at 64x64x1)")
    parse_rate = best_rate(lambda: render(parse_drawings(texts).strokes, RenderParams(64)), len(texts))
    ref128 = best_rate(lambda: [render_reference(t, 128) for t in texts[:2000]], min(2000, len(texts)), repeat=1)
    print(f"ours incl. JSON parse 64x64x1: {parse_rate:,.0f}/s; reference: {ref:,.0f}/s at 64, {ref128:,.0f}/s at 128")
    results.update(
        {
            "ours_per_s": results["ours_64x64x1_per_s"],
            "ours_incl_parse_per_s": round(parse_rate),
            "reference_128_per_s": round(ref128),
            "ratio": round(results["ours_64x64x1_per_s"] / ref, 1),
            "ratio_incl_parse": round(parse_rate / ref, 1),
        }
    )
    last_line(results)


if __name__ == "__main__":
    main()
