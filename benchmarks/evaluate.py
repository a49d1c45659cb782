"""Benchmark the evaluate stage's memory and time on a large validation split (default 1M drawings).

    python -m benchmarks.evaluate [--rows 1000000] [--classes 340] [--size 32] [--workdir DIR]

Builds a synthetic render cache straight away, in the layout ``doodle/render/format.py`` describes (no
sample/shard/render: that would take longer than the evaluation itself): ``--rows`` random
sparse images in the val split over ``--val-files`` shard files, plus a tiny train split, and an
untrained ``cnn`` at width 0.25 over ``--classes`` classes saved as models/main/model.keras +
models/main/model.json, as the train stage writes them. An untrained model costs the same to run as
a trained one, and its near-uniform scores make almost every drawing a mistake, the worst case
for the analysis' mistake bookkeeping. Then it runs ``python -m stages.evaluate`` there in a
subprocess and samples the peak memory of its process tree (benchmarks.common.TreeMemory).

The peak RSS is the number to watch: a stage that holds per-drawing results grows with --rows
(1.36 GB of float32 probabilities alone at 1M x 340), a streaming one does not. The cache is
kept in --workdir and reused when it matches, so runs at several sizes or of another stage
version compare on the same data (``--module`` runs another module, e.g. an old copy of the
stage on PYTHONPATH). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, TreeMemory, last_line

BLOCK_ROWS = 65_536  # rows generated at a time: 64 MB at 32x32x1, so building 1M rows stays small too


def write_split_files(cache: Path, prefix: str, rows: int, shape: tuple, classes: int, rng) -> None:
    """One shard's images/labels/keys .npy files, images filled block by block through a memmap."""
    images = np.lib.format.open_memmap(cache / f"{prefix}.images.npy", mode="w+", dtype=np.uint8, shape=(rows, *shape))
    for a in range(0, rows, BLOCK_ROWS):
        n = min(BLOCK_ROWS, rows - a)
        # ~15% inked pixels: random-ish drawings, so the model sees varied inputs
        ink = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        ink[rng.random((n, *shape), dtype=np.float32) > 0.15] = 0
        images[a : a + n] = ink
    images.flush()
    del images
    np.save(cache / f"{prefix}.labels.npy", rng.integers(0, classes, rows).astype(np.int16))
    np.save(cache / f"{prefix}.keys.npy", np.arange(rows, dtype=np.int64) + 9_000_000_000_000_000)


def build_cache(work: Path, rows: int, classes: int, size: int, val_files: int, train_rows: int) -> bool:
    """data/cache/ with ``rows`` val drawings; returns False when a matching cache was already there."""
    from doodle.drawing.raster import RenderParams

    cache = work / "data" / "cache"
    spec = {"rows": rows, "classes": classes, "size": size, "val_files": val_files, "train_rows": train_rows}
    spec_file = work / "bench_cache.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == spec and (cache / "manifest.json").is_file():
        return False
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("*.npy"):
        old.unlink()
    render = RenderParams(size)
    rng = np.random.default_rng(0)
    files = [{"prefix": "shard-000", "split": "train", "rows": train_rows}]
    write_split_files(cache, "shard-000", train_rows, render.shape(), classes, rng)
    per = -(-rows // val_files)
    for i in range(val_files):
        n = min(per, rows - i * per)
        prefix = f"shard-{i + 1:03d}"
        write_split_files(cache, prefix, n, render.shape(), classes, rng)
        files.append({"prefix": prefix, "split": "val", "rows": n})
    manifest = {
        "render": render.to_dict(),
        "classes": class_names(classes),
        "files": files,
        "rows": train_rows + rows,
        "blank_images": 0,
        "dots_only_drawings": 0,
    }
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    spec_file.write_text(json.dumps(spec) + "\n")
    return True


def class_names(classes: int) -> list[str]:
    return [f"class {i:03d}" for i in range(classes)]


def save_untrained_model(work: Path, classes: int, size: int) -> None:
    """models/main/model.keras + models/main/model.json with the keys stages/train.py writes (no history)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from doodle.drawing.raster import RenderParams
    from doodle.models import build_model

    render = RenderParams(size)
    keras.utils.set_random_seed(0)
    model = build_model("cnn", render.shape(), classes, width=0.25)
    folder = work / "models" / "main"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    meta = {
        "model": "cnn",
        "width": 0.25,
        "input_shape": list(render.shape()),
        "classes": class_names(classes),
        "render": render.to_dict(),
        "device": "CPU",
        "metrics": {},
        "history": {},
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    # what predict records of the blend, and evaluate scores: here the one model
    blend = {"models": [{"name": "main", "files": ["models/main/model.keras"], "weight": 1.0}]}
    (work / "reports").mkdir(exist_ok=True)
    (work / "reports" / "blend.json").write_text(json.dumps(blend, indent=2) + "\n")


def run_stage(work: Path, module: str) -> tuple[float, TreeMemory, str]:
    """Run ``python -m module --quiet`` in ``work``; (wall seconds, memory sampler, its output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--quiet"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with TreeMemory(proc.pid, interval=0.1) as mem:
        out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{module} failed with status {proc.returncode}:\n{out}")
    return wall, mem, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="validation drawings")
    p.add_argument("--classes", type=int, default=340)
    p.add_argument("--size", type=int, default=32, help="image side in pixels (one channel)")
    p.add_argument("--val-files", type=int, default=4, help="shard files the val split is spread over")
    p.add_argument("--train-rows", type=int, default=1_000)
    p.add_argument("--module", default="stages.evaluate", help="the stage module to run")
    p.add_argument("--workdir", default="/tmp/doodle-bench-evaluate")
    a = p.parse_args()
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = build_cache(work, a.rows, a.classes, a.size, a.val_files, a.train_rows)
    save_untrained_model(work, a.classes, a.size)
    setup = time.perf_counter() - t0
    cache_gb = a.rows * a.size * a.size / 1e9
    print(
        f"{'built' if built else 'reused'} a {a.rows:,}-row val cache ({cache_gb:.2f} GB of images) and an "
        f"untrained cnn over {a.classes} classes in {setup:.1f}s"
    )

    wall, mem, out = run_stage(work, a.module)
    ev = json.loads((work / "reports" / "eval.json").read_text())
    confusion_rows = sum(1 for _ in (work / "reports" / "confusion.csv").open()) - 1
    print(out.strip().splitlines()[-1] if out.strip() else "(no output)")
    print(
        f"{a.module} on {ev['val_rows']:,} drawings x {a.classes} classes: {wall:.1f}s "
        f"({ev['val_rows'] / wall:,.0f}/s incl. start-up), peak RSS {mem.peak_rss_mb:,.0f} MB, "
        f"peak PSS {mem.peak_pss_mb:,.0f} MB; eval.json {(work / 'metrics' / 'eval.json').stat().st_size} bytes, "
        f"confusion.csv {confusion_rows:,} rows"
    )
    last_line(
        {
            "module": a.module,
            "rows": ev["val_rows"],
            "classes": a.classes,
            "size": a.size,
            "seconds": round(wall, 1),
            "peak_rss_mb": round(mem.peak_rss_mb),
            "peak_pss_mb": round(mem.peak_pss_mb),
            "val_map_at_3": ev["val_map_at_3"],
            "eval_json_bytes": (work / "metrics" / "eval.json").stat().st_size,
            "confusion_csv_rows": confusion_rows,
        }
    )


if __name__ == "__main__":
    main()
