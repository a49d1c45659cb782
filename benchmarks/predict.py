"""Benchmark the predict stage on a Kaggle-sized test set (112,199 drawings) on this machine's CPU.

    python -m benchmarks.predict [--model models/main/model.keras] [--rows 112199]
    python -m benchmarks.predict --arch mobilenet --size 64     # the public baseline's model, untrained

Replicates real test drawings (../shared/data/quickdraw-kaggle, else the sample) to --rows and
runs the predict stage itself, end to end, in a scratch folder: streaming, parsing, rendering,
the model, class balancing, writing and validating the submission, the top-k parquet. Reports
the total time and the shares of rendering and the model (from the stage's reports/test.json).
With --arch it times an untrained model of that architecture over 340 classes, which costs
the same as a trained one. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from benchmarks.common import last_line, replicate_test


def untrained_model(work: Path, arch: str, size: int, classes: int) -> Path:
    """Save an untrained ``arch`` model with the metadata the predict stage reads."""
    from doodle.drawing.raster import RenderParams
    from doodle.models import build_model

    render = RenderParams(size)
    model = build_model(arch, render.shape(), classes)
    path = work / "models" / "main" / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "model": arch,
                "classes": [f"class {i:03d}" for i in range(classes)],
                "render": dataclasses.asdict(render),
            }
        )
    )
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/main/model.keras")
    p.add_argument("--arch", default=None, help="time an untrained model of this architecture instead")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--classes", type=int, default=340)
    p.add_argument("--rows", type=int, default=112_199)
    p.add_argument("--tta", action="store_true", help="predict.tta_flip: also the mirrored images")
    p.add_argument("--workdir", default="/tmp/doodle-bench-predict")
    a = p.parse_args()
    work = Path(a.workdir).resolve()
    src = work / "src"
    replicate_test(src / "test_simplified.csv", a.rows)
    (src / "train_simplified").mkdir(exist_ok=True)  # the Kaggle layout; predict reads only the test file
    (src / "train_simplified" / "placeholder.csv").write_text("countrycode,drawing,key_id,recognized,timestamp,word\n")
    if a.arch:
        untrained_model(work, a.arch, a.size, a.classes)
    else:  # predict.models must lie under models/ (dvc.yaml tracks the ensemble there)
        (work / "models" / "main").mkdir(parents=True, exist_ok=True)
        for suffix in (".keras", ".json"):
            shutil.copy(Path(a.model).with_suffix(suffix), work / "models" / "main" / f"model{suffix}")
    (work / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(src)},
                "predict": {"models": ["models/main/model.keras"], "tta_flip": a.tta, "balance": "auto"},
            }
        )
    )
    from stages import predict

    os.chdir(work)  # the stage writes submissions/, metrics/ and reports/ here, not into the repository
    t0 = time.perf_counter()
    predict.main(["--params", "params.yaml", "--quiet"])
    wall = time.perf_counter() - t0
    m = json.loads((work / "reports" / "test.json").read_text())
    name = a.arch or a.model
    print(
        f"{m['test_rows']:,} drawings with {name}: {m['seconds']:.1f}s in the stage "
        f"({m['test_rows'] / m['seconds']:,.0f}/s; "
        f"{wall:.1f}s with model loading); render {m['render_seconds']:.1f}s ({m['render_share']:.1%}), "
        f"model {m['model_seconds']:.1f}s, balanced={m['balanced']}, tta={m['tta_flip']}"
    )
    last_line(
        {
            "rows": m["test_rows"],
            "model": str(name),
            "seconds": m["seconds"],
            "wall_seconds": round(wall, 1),
            "render_s": m["render_seconds"],
            "model_s": m["model_seconds"],
            "render_share": m["render_share"],
            "balanced": m["balanced"],
            "tta_flip": m["tta_flip"],
        }
    )


if __name__ == "__main__":
    main()
