"""Benchmark prediction of a Kaggle-sized test set (112,199 drawings) on this machine's CPU.

    python benchmarks/predict.py [--model models/model.keras] [--rows 112199]

Replicates real test drawings (../shared/data/quickdraw-kaggle, else the sample) to --rows,
then parses, renders and predicts them as the predict stage does, and reports the time and
rendering's share. Without a trained model it times an untrained model of --arch/--size.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import last_line, replicate_test  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--arch", default=None, help="time an untrained model of this architecture instead")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rows", type=int, default=112_199)
    p.add_argument("--batch", type=int, default=512)
    a = p.parse_args()
    from doodle.inference import Timing, TrainedModel, predict_probs
    from doodle.raster import RenderParams
    from doodle.sources import iter_test_blocks
    from doodle.strokes import parse_drawings
    if a.arch:
        from doodle.models import build_model
        r = RenderParams(a.size)
        model = TrainedModel(Path(a.arch), build_model(a.arch, r.shape(), 340), [str(i) for i in range(340)], r)
    else:
        model = TrainedModel.load(a.model)
    test = replicate_test(Path("/tmp/doodle-bench-predict/test_simplified.csv"), a.rows)
    timing = Timing()
    t0 = time.perf_counter()
    n = 0
    parse_s = 0.0
    for table in iter_test_blocks(test, 4 << 20):
        t1 = time.perf_counter()
        parsed = parse_drawings(table["drawing"])
        parse_s += time.perf_counter() - t1
        n += len(predict_probs([model], parsed.strokes.expand(parsed.valid), a.batch, False, timing))
    seconds = time.perf_counter() - t0
    name = a.arch or a.model
    print(f"{n:,} drawings with {name} at {model.render.shape()}: {seconds:.1f}s ({n / seconds:,.0f}/s); "
          f"parse {parse_s:.1f}s, render {timing.render_s:.1f}s ({timing.render_s / seconds:.1%}), "
          f"model {timing.model_s:.1f}s")
    last_line({"rows": n, "model": str(name), "seconds": round(seconds, 1), "parse_s": round(parse_s, 2),
               "render_s": round(timing.render_s, 2), "model_s": round(timing.model_s, 1),
               "render_share": round(timing.render_s / seconds, 4)})


if __name__ == "__main__":
    main()
