"""The train stage's run for one model of params.yaml's ``models``: its params checked against the data,
the devices chosen, the single model or the ensemble trained (doodle.train.ensemble), and the resume
backup removed once the figures are written.

``train.strategy: multi_worker``: only the chief (worker 0) writes into the project; the other workers
run the same training (they take part in collective operations) into a scratch directory deleted at
the end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from doodle.core.report import StageResult
from doodle.render.format import read_cache_manifest
from doodle.render.params import RenderSection
from doodle.shard.format import read_manifest

from .ensemble import TrainFiles, check_run, train_models
from .params import TrainParams
from .strategy import cluster_worker, device_strategy
from .trainer import Setup


def run(
    cfg: TrainParams,
    render_cfg: RenderSection,
    files_under: Callable[[Path], TrainFiles],
    cache_dir: Path,
    shards_dir: Path,
    report: Callable[[StageResult], None],
    progress: bool = True,
) -> StageResult | None:
    """Train the model ``cfg`` describes into ``files_under(Path("."))`` (the project's layout, rooted
    at ``root``) and hand its figures to ``report`` (which writes them) before the resume backup is
    removed: a run killed before its figures are written resumes. Returns them too (None on a
    worker other than the chief, which writes nothing)."""
    worker = cluster_worker(cfg.strategy)  # TF_CONFIG checked before anything starts
    cache, shards = read_cache_manifest(cache_dir), read_manifest(shards_dir)
    check_run(cfg, render_cfg, cache, shards, worker, cache_dir)  # the params against the data, before any work
    strategy, device = device_strategy(cfg.mixed_precision, cfg.strategy)  # before TensorFlow runs anything
    setup = Setup(render_cfg, cfg.encoder(render_cfg), strategy, device, worker, cache, shards, cache_dir, shards_dir)
    if worker.chief:
        files = files_under(Path("."))
        result = train_models(cfg, replace(setup, progress=progress), files)
        report(result)
        shutil.rmtree(files.backup, ignore_errors=True)  # done and written: nothing to resume
        with contextlib.suppress(OSError):  # models/backup itself, unless another model's training left its own
            files.backup.parent.rmdir()
        return result
    scratch = Path(tempfile.mkdtemp(prefix=f"doodle-train-worker{worker.index}-"))
    try:
        train_models(cfg, setup, files_under(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None
