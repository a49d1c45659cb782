"""Stage `train@<name>`: train model ``<name>`` of params.yaml's ``models`` (models/<name>/model.keras
+ metadata). dvc.yaml runs it once per model (``foreach``); ``--model NAME`` picks the model (needed
only when params.yaml names several). Its train params are the ``train`` section with the model's
recipe and overrides merged in (doodle.lineup).

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
(doodle.train.ensemble), each as the single model is (doodle.train.trainer), into models/<name>/members/,
and models/<name>/model.keras is a copy of the reference member. metrics/train/<name>.json has the
mean and standard deviation of the members' val MAP@3 and the out-of-fold MAP@3;
reports/train/<name>.json every member's figures.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from doodle.core.params import ParamError, load_section, read_params
from stages import cli


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    p.add_argument("--model", help="which model of params.yaml's `models` to train (default: the only one)")
    args = p.parse_args(argv)
    # The library is imported once the arguments are parsed: it loads TensorFlow (seconds), which
    # --help does not need.
    from doodle import lineup
    from doodle.batches.cache import CacheParams, read_cache_manifest
    from doodle.core.paths import CACHE, SHARDS
    from doodle.shard.format import read_manifest
    from doodle.train.ensemble import check_run, train_models
    from doodle.train.feed import training_encoder
    from doodle.train.strategy import cluster_worker, device_strategy
    from doodle.train.trainer import Setup

    cli.setup_logging()
    params = read_params(args.params)
    name = args.model or only_model(lineup.names(params))
    cfg = lineup.train_params(params, name)
    render_cfg = load_section(CacheParams, "render", params)
    worker = cluster_worker(cfg.strategy)  # TF_CONFIG checked before anything starts
    cache, shards = read_cache_manifest(CACHE), read_manifest(SHARDS)
    check_run(cfg, render_cfg, cache, shards, worker, CACHE)  # the params against the data, before any work
    strategy, device = device_strategy(cfg.mixed_precision, cfg.strategy)  # before TensorFlow runs anything
    encoder = training_encoder(cfg, render_cfg)
    run = Setup(render_cfg, encoder, strategy, device, worker, cache, shards, CACHE, SHARDS, progress=not args.quiet)
    if worker.chief:
        files = train_files(Path("."), name)
        cli.report(f"train/{name}", train_models(cfg, run, files))
        shutil.rmtree(files.backup, ignore_errors=True)  # done and written: nothing to resume
        with contextlib.suppress(OSError):  # models/backup itself, unless another model's training left its own
            files.backup.parent.rmdir()
        return
    # Not the chief: the same training, its files in a scratch directory (see the module doc).
    scratch = Path(tempfile.mkdtemp(prefix=f"doodle-train-worker{worker.index}-"))
    try:
        train_models(cfg, replace(run, progress=False), train_files(scratch, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def only_model(names: list[str]) -> str:
    """The model to train when ``--model`` is not given: the only one params.yaml names."""
    if len(names) != 1:
        raise ParamError(f"params.yaml's models names {len(names)} models ({', '.join(names)}): pick one with --model")
    return names[0]


def train_files(root: Path, name: str):
    """Where model ``name``'s run writes, under ``root``: the project for the chief, a scratch folder
    for the other workers of a multi-worker run; the layout of doodle.core.paths (dvc.yaml's outs)."""
    from doodle.core.paths import BACKUP, DVCLIVE, MEMBERS, META_FILE, MODEL_FILE, REPORTS, model_dir
    from doodle.train.ensemble import TrainFiles

    folder = root / model_dir(name)
    return TrainFiles(
        root,
        model=folder / MODEL_FILE,
        meta=folder / META_FILE,
        backup=root / BACKUP / name,
        live=root / DVCLIVE / name,
        members=folder / MEMBERS,
        oof=folder / MEMBERS / "oof.parquet",
        curves=root / REPORTS / "train" / f"{name}_curves.png",
    )


if __name__ == "__main__":
    cli.run(main)
