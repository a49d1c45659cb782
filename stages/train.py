"""Stage `train`: train a Keras model on the render cache (models/model.keras + metadata).

Rerunning after a kill resumes from the last completed epoch and ends with the same model, history
and curves as an uninterrupted run (see doodle.train.resume).

``train.strategy: multi_worker`` trains on several machines: run this same command on each, with
``TF_CONFIG`` naming the cluster and the machine's place in it. ``train.batch_size`` is per replica,
so the global batch is ``batch_size`` x replicas over all workers; each worker draws its share of it
(doodle.batches.stream) and validates on the whole validation set. Only the chief (worker 0) writes the
model, its metadata, the metrics, the DVCLive files and the resume backup; the others run the same
saves (they take part in collective operations) into a scratch directory deleted at the end. A
multi-worker run does not resume: it starts again from epoch 0.

``train.folds`` K and ``train.seeds`` N: with K x N > 1 the stage trains K x N members
(doodle.train.ensemble), each as the single model is (doodle.train.trainer), and models/model.keras is a copy
of the reference member. metrics/train.json has the mean and standard deviation of the members'
val MAP@3 and the out-of-fold MAP@3; reports/train.json every member's figures.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from doodle.core.params import load_section, read_params
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    # The library is imported once the arguments are parsed: it loads TensorFlow (seconds), which
    # --help does not need.
    from doodle.batches.cache import CacheParams, read_cache_manifest
    from doodle.core.paths import CACHE, SHARDS
    from doodle.shard.format import read_manifest
    from doodle.train.ensemble import check_run, train_models
    from doodle.train.feed import training_encoder
    from doodle.train.params import TrainParams
    from doodle.train.strategy import cluster_worker, device_strategy
    from doodle.train.trainer import Setup

    cli.setup_logging()
    params = read_params(args.params)
    cfg = load_section(TrainParams, "train", params)
    render_cfg = load_section(CacheParams, "render", params)
    worker = cluster_worker(cfg.strategy)  # TF_CONFIG checked before anything starts
    cache, shards = read_cache_manifest(CACHE), read_manifest(SHARDS)
    check_run(cfg, render_cfg, cache, shards, worker, CACHE)  # the params against the data, before any work
    strategy, device = device_strategy(cfg.mixed_precision, cfg.strategy)  # before TensorFlow runs anything
    encoder = training_encoder(cfg, render_cfg)
    run = Setup(render_cfg, encoder, strategy, device, worker, cache, shards, CACHE, SHARDS, progress=not args.quiet)
    if worker.chief:
        files = train_files(Path("."))
        cli.report("train", train_models(cfg, run, files))
        shutil.rmtree(files.backup, ignore_errors=True)  # done and written: nothing to resume
        return
    # Not the chief: the same training, its files in a scratch directory (see the module doc).
    scratch = Path(tempfile.mkdtemp(prefix=f"doodle-train-worker{worker.index}-"))
    try:
        train_models(cfg, replace(run, progress=False), train_files(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_files(root: Path):
    """Where a run writes, under ``root``: the project for the chief, a scratch folder for the other
    workers of a multi-worker run; the layout of doodle.core.paths (dvc.yaml's outs)."""
    from doodle.core.paths import BACKUP, DVCLIVE, MEMBERS, MODEL, MODEL_META, REPORTS
    from doodle.train.ensemble import TrainFiles

    return TrainFiles(
        root,
        model=root / MODEL,
        meta=root / MODEL_META,
        backup=root / BACKUP,
        live=root / DVCLIVE,
        members=root / MEMBERS,
        oof=root / MEMBERS / "oof.parquet",
        curves=root / REPORTS / "train_curves.png",
    )


if __name__ == "__main__":
    cli.run(main)
