"""The sample stage's run: write the embedded data set of ``sample.kind`` and say what was written."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from doodle.core.report import StageResult

from .generate import SampleParams, generate


def run(out_dir: Path, cfg: SampleParams, progress: bool = True) -> StageResult:
    """Write the data set under ``out_dir`` (replacing it): its counts for reports/sample.json (no
    headline: nothing here is compared between runs) and the stage's line."""
    t0 = time.perf_counter()
    total = (cfg.train_per_class + cfg.test_per_class) * len(cfg.class_names())
    with tqdm(total=total, unit="drawing", desc=f"sample {cfg.kind}", disable=not progress) as bar:
        counts = generate(out_dir, cfg, bar.update)
    values = {"kind": cfg.kind, **counts, "seconds": round(time.perf_counter() - t0, 3)}
    line = (
        f"sample ({cfg.kind}): {counts['classes']} classes, {counts['train_rows']:,} train rows "
        f"({counts['corrupted_rows']} deliberately broken), {counts['test_rows']:,} test rows "
        f"-> {out_dir} in {values['seconds']:.1f}s"
    )
    return StageResult(values, (), line)
