"""Stage `train`: train a Keras model on the render cache (models/model.keras + metadata).

Rerunning after a kill resumes from the last completed epoch and ends with the same model, history
and curves as an uninterrupted run (see doodle.resume).

``train.strategy: multi_worker`` trains on several machines: run this same command on each, with
``TF_CONFIG`` naming the cluster and the machine's place in it. ``train.batch_size`` is per replica,
so the global batch is ``batch_size`` x replicas over all workers; each worker draws its share of it
(doodle.datasets) and validates on the whole validation set. Only the chief (worker 0) writes the
model, its metadata, the metrics, the DVCLive files and the resume backup; the others run the same
saves (they take part in collective operations) into a scratch directory deleted at the end. A
multi-worker run does not resume: it starts again from epoch 0.

``train.folds`` K and ``train.seeds`` N (doodle.folds): with K x N > 1 the stage trains K x N
members, fold f (shards i % K == f held out) x seed train.seed + s, each exactly as the single model
(callbacks, BatchNorm recalibration, resumable state), into models/members/fold{f}-seed{s}.keras +
.json. models/model.keras is then a copy of the reference member (doodle.folds.reference_fold),
which the evaluate stage scores. models/members/oof.parquet holds every held-out drawing's mean
probabilities over its fold's members (with K = N = 1: the holdout's, from the single model).
metrics/train.json has the mean and standard deviation of the members' val MAP@3 and the
out-of-fold MAP@3; reports/train.json every member's figures.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from doodle.batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers
from doodle.cache import CacheParams, CacheSplit, open_split, read_cache_manifest
from doodle.callbacks import EpochLog, LiveLog, StepProgress, TimeBudget
from doodle.datasets import BatchStream, tf_dataset
from doodle.folds import (
    FoldAccumulator,
    OofWriter,
    member_name,
    open_fold,
    plan_folds,
    reference_fold,
    summarize_members,
    write_oof,
)
from doodle.inputs import CACHE, SHARDS, fit_data, training_stream
from doodle.metrics import MapAt3, SmoothedSparseCrossentropy, map_at_3
from doodle.models import build_model
from doodle.params import ParamError, load_section, read_params
from doodle.resume import TrainingState, reopen_live
from doodle.shards import read_manifest
from doodle.training import (
    TrainParams,
    Worker,
    cluster_worker,
    device_strategy,
    make_optimizer,
)
from stages import _cli

MODEL = Path("models/model.keras")
META = Path("models/model.json")
BACKUP = Path("models/backup")
LIVE = Path("dvclive")
MEMBERS = Path("models/members")  # the ensemble's members and the out-of-fold file (one dvc.yaml out)
OOF = MEMBERS / "oof.parquet"
PREDICT_BATCH = 512  # images a call when predicting the held-out drawings
# in reports/train.json, never in models/ (whether train.time_budget_s stopped the run depends on timings too)
TIMINGS = ("seconds", "images_per_s", "bn_recalibration_seconds", "stopped_by_time_budget", "time_budget_used_s")
RECALIBRATION_EPOCHS = 1_000_000  # the recalibration stream's epochs: apart from the training ones


def main(argv=None) -> None:
    args = _cli.parser(__doc__).parse_args(argv)
    _cli.setup_logging()
    params = read_params(args.params)
    cfg = load_section(TrainParams, "train", params)
    render_cfg = load_section(CacheParams, "render", params)
    worker = cluster_worker(cfg.strategy)  # TF_CONFIG checked before anything starts
    strategy, device = device_strategy(cfg.mixed_precision, cfg.strategy)  # before TensorFlow runs anything
    run = Setup(render_cfg, strategy, device, worker, read_cache_manifest(CACHE), progress=not args.quiet)
    if worker.chief:
        train_all(cfg, run, Path("."))
        return
    # Not the chief: the same training, its files in a scratch directory (see the module doc).
    scratch = Path(tempfile.mkdtemp(prefix=f"doodle-train-worker{worker.index}-"))
    try:
        train_all(cfg, replace(run, progress=False), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Setup:
    """What every model of a run shares."""

    render: CacheParams
    strategy: object
    device: str
    worker: Worker
    cache: dict  # the render cache's manifest
    progress: bool = False


@dataclass(frozen=True)
class Member:
    """One model to train, its data and where its files go. ``name`` is empty for the single model
    (train.folds and train.seeds 1), which keeps the files and messages of a plain run."""

    name: str
    fold: int
    model: Path
    meta: Path
    backup: Path
    live: Path
    val_split: CacheSplit
    train_split: CacheSplit | None = None  # None: the cache's train split, or drawn on the fly
    held_out: tuple[int, ...] = ()  # the shards it never trains on
    fingerprint: dict = field(default_factory=dict)  # what else makes its resume backup its own

    @property
    def tag(self) -> str:
        return f"train [{self.name}]" if self.name else "train"


def train_all(cfg: TrainParams, run: Setup, out: Path) -> None:
    """Train and write the outputs under ``out`` (the project for the chief, a scratch directory else):
    the single model, or with train.folds or train.seeds > 1 the ensemble (:func:`train_ensemble`)."""
    if cfg.folds > 1 or cfg.seeds > 1:
        train_ensemble(cfg, run, out)
        return
    if run.worker.chief:  # stale members would be averaged by predict's ``models: auto``
        clear_members(out / MEMBERS)
    val_split = open_split(CACHE, "val")
    result = train_member(cfg, run, Member("", 0, out / MODEL, out / META, out / BACKUP, out / LIVE, val_split))
    if result is None:
        return
    metrics, best = result
    _cli.write_metrics("train", metrics, headline=("val_map_at_3", "epochs_run"), root=out)
    # the holdout's predictions, for stacking like an ensemble's out-of-fold file
    write_oof(out / OOF, [(0, val_split, [best])], len(run.cache["classes"]), PREDICT_BATCH)
    shutil.rmtree(out / BACKUP, ignore_errors=True)  # a finished run leaves nothing to resume
    print(
        f"train: best val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_accuracy']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} after {metrics['epochs_run']} epochs in {metrics['seconds']:.0f}s -> {MODEL}"
    )


def train_ensemble(cfg: TrainParams, run: Setup, out: Path) -> None:
    """train.folds x train.seeds members, each trained as the single model is (doodle.folds).

    The reference member (seed 0 of :func:`doodle.folds.reference_fold`) trains first and is also
    copied to models/model.keras, with its curves in dvclive/; the others' curves are in
    dvclive/members/<name>/. Every member keeps its resume backup (models/backup/<name>) until the
    whole ensemble is done, so a killed ensemble reruns finished members in no time (0 epochs) and
    resumes the interrupted one exactly. Members average their probabilities per fold into the OOF file.
    """
    shards, chief = read_manifest(SHARDS), run.worker.chief
    if cfg.folds > 1:
        folds = plan_folds(run.cache, shards, cfg.folds, run.render.train_cache)
        ref = reference_fold(folds, shards["val_shards"])
    else:
        folds, ref = [None], 0  # seeds only: the shard.val_shards holdout, as the single model
    names = [member_name(f, s) for f in range(len(folds)) for s in range(cfg.seeds)]
    if chief:  # what an earlier run left (predict's ``models: auto`` would average stale members)
        clear_members(out / MEMBERS)
        for stale in (out / LIVE / "members").glob("*"):
            if stale.name not in names:
                shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    results = []
    oof = OofWriter(out / OOF, len(run.cache["classes"])) if chief else None
    for f in [ref, *(f for f in range(len(folds)) if f != ref)]:
        fold = folds[f]
        if fold is None:
            train_split, val_split, held = None, open_split(CACHE, "val"), shards["val_shards"]
        else:
            train_split, val_split = open_fold(CACHE, fold)
            held = list(fold.val_shards)
        extra = {} if fold is None else {"fold": f, "train_files": fold.train, "val_files": fold.val}
        splits = {"val_split": val_split, "train_split": train_split, "held_out": tuple(held), "fingerprint": extra}
        # the fold's members' summed probabilities: each member adds its own as soon as it is trained
        acc = FoldAccumulator(out / MEMBERS / f".oof-fold{f}.npy", val_split, oof.classes) if oof is not None else None
        for s in range(cfg.seeds):
            name = member_name(f, s)
            live = out / LIVE if (f, s) == (ref, 0) else out / LIVE / "members" / name
            files = out / MEMBERS / name
            member = Member(
                name, f, files.with_suffix(".keras"), files.with_suffix(".json"), out / BACKUP / name, live, **splits
            )
            member_cfg = copy.copy(cfg)  # keeps what validate() derived (augment_params, ...)
            member_cfg.seed = cfg.seed + s
            result = train_member(member_cfg, run, member)
            if result is None:  # not the chief: only the training itself, collectively
                continue
            metrics, best = result
            top = acc.add(lambda x, m=best: m(x, training=False), PREDICT_BATCH)
            rows = {"train_rows": train_split.rows if train_split is not None else None, "val_rows": val_split.rows}
            metrics["oof_map_at_3"] = map_at_3(val_split.all_labels(), top)  # on all of its fold, unlike val_steps
            results.append({"name": name, "fold": f, "seed": member_cfg.seed, "val_shards": held, **rows, **metrics})
            del best, result
            gc.collect()
        if oof is not None:
            oof.add_fold(f, acc)
            acc.close()
    if oof is None:  # not the chief
        return
    oof.close()
    reference = member_name(ref, 0)
    for src, dst in (
        (out / MEMBERS / f"{reference}.keras", out / MODEL),
        (out / MEMBERS / f"{reference}.json", out / META),
    ):
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    summary = summarize_members(results, oof, reference)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    headline = ("val_map_at_3", "val_map_at_3_std", "oof_map_at_3", "epochs_run", "members")
    _cli.write_metrics("train", summary, headline=headline, root=out)
    shutil.rmtree(out / BACKUP, ignore_errors=True)  # the ensemble is done: nothing to resume
    print(
        f"train: {len(results)} members ({len(folds)} fold(s) x {cfg.seeds} seed(s)), val MAP@3 "
        f"{summary['val_map_at_3']:.4f} +- {summary['val_map_at_3_std']:.4f}, out-of-fold MAP@3 "
        f"{summary['oof_map_at_3']:.4f} over {oof.rows:,} drawings in {summary['seconds']:.0f}s -> "
        f"{MEMBERS}/, {MODEL} = {reference}"
    )


def clear_members(members: Path) -> None:
    """Remove what an earlier run left in models/members (DVC does, ``python -m stages.train`` not)."""
    if members.is_dir():
        for path in members.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    members.mkdir(parents=True, exist_ok=True)


def train_member(cfg: TrainParams, run: Setup, member: Member):
    """Train ``member``; write its best model and metadata. Returns (metrics, best model) on the
    chief, None on the other workers."""
    model_path, meta_path, backup, live_dir = member.model, member.meta, member.backup, member.live
    render_cfg, strategy, device, worker, cache = run.render, run.strategy, run.device, run.worker, run.cache
    val_split = member.val_split
    keras.utils.set_random_seed(cfg.seed)
    classes = cache["classes"]
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch = cfg.batch_size * replicas  # the global batch: over every replica of every worker
    local = batch // worker.count  # this worker's share of it

    train, source = training_stream(cfg, render_cfg, cache, local, worker, split=member.train_split)
    val = BatchStream(val_split, local, shuffle=False, steps=cfg.val_steps)  # all of it, on every worker
    shape = train.image_shape
    shared, role = "", ""
    if worker.count > 1:
        shared = f" ({local} on each of {worker.count} workers)"
        role = f"; this is worker {worker.index}{' (the chief)' if worker.chief else ''}"
    print(
        f"{member.tag}: {cfg.model} on {shape}, {len(classes)} classes, {train.rows:,} train "
        f"{'images' if source == 'cache' else 'drawings (drawn on the fly)'} / "
        f"{val_split.rows:,} val images; device: {device}; batch {batch}{shared} x {len(train)} steps x "
        f"{cfg.epochs} epochs{role}",
        flush=True,
    )

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_model(cfg.model, shape, len(classes), width=cfg.width, augment=cfg.augment_params, seed=cfg.seed)
        model.compile(
            optimizer=make_optimizer(cfg, len(train)),
            loss=SmoothedSparseCrossentropy(cfg.label_smoothing),
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(3, name="top3"), MapAt3()],
        )

    # The callbacks that decide on each epoch's val_map_at_3; TrainingState saves their counters. It also
    # keeps the best model (in the backup, copied to MODEL), so EarlyStopping keeps no best weights.
    decisions = [
        keras.callbacks.EarlyStopping(monitor="val_map_at_3", mode="max", patience=cfg.early_stopping_patience),
    ]
    if cfg.schedule == "plateau":
        decisions.insert(
            0,
            keras.callbacks.ReduceLROnPlateau(monitor="val_map_at_3", mode="max", factor=0.5, patience=2, min_lr=1e-5),
        )
    fingerprint = cfg.fingerprint(
        {
            "cache": cache["render"],
            "rows": cache["rows"],
            "files": cache["files"],
            "train_source": source,
            "variables": [list(v.shape) for v in model.variables],  # a changed architecture never resumes
            "batch": batch,  # another number of replicas is another run
            **member.fingerprint,  # a fold's shards
        }
    )
    if worker.count > 1 and backup.exists():
        # Every worker must start at the same epoch, and the others keep no backup: start over.
        print(f"{member.tag}: multi-worker runs do not resume; deleting {backup}", flush=True)
        shutil.rmtree(backup)
    state = TrainingState(backup, fingerprint, best_model=model_path, monitor="val_map_at_3", track=decisions)
    start = cfg.epochs if state.stopped else state.epochs_done
    live = reopen_live(live_dir, state.epochs_done, save_dvc_exp=False, dvcyaml=None)
    resumed = f"; resuming from backup after epoch {state.epochs_done}" if state.epochs_done else ""
    print(f"{member.tag}: {model.count_params():,} parameters{resumed}", flush=True)

    images = len(train) * batch

    # After an epoch's last step, before validation: BatchNorm statistics from training batches of
    # a stream of their own (deterministic per epoch, so a resumed run does exactly the same).
    # Every worker recalibrates on the same batches (own=False), so the statistics agree everywhere.
    def recalibration_batches(e):
        return (
            x
            for x, _ in itertools.islice(train.epoch(RECALIBRATION_EPOCHS + e, own=False), cfg.bn_recalibration_batches)
        )

    recalibration = RecalibrateBatchNorm(recalibration_batches, len(train))
    # In this order at each epoch end: decide, write the DVCLive row, save it all, then print the
    # "epoch i/N done" line, so that a printed epoch is one a rerun continues after.
    # train.time_budget_s decides with them, before the state is saved (a budget stop is kept on resume).
    # Each worker would read its own clock, and workers that disagree on stopping would hang.
    if cfg.time_budget_s and worker.count > 1:
        raise ParamError("param train.time_budget_s: not supported with train.strategy multi_worker; use null")
    budget = [TimeBudget(cfg.time_budget_s)] if cfg.time_budget_s else []
    callbacks = [
        *decisions,
        *budget,
        LiveLog(live, images),
        state,
        EpochLog(images, cfg.epochs),
        ChanceWatch(len(classes)),
        StepProgress(len(train), batch, cfg.epochs, cfg.time_budget_s, bar=run.progress),
    ]
    if cfg.bn_recalibration_batches and batchnorm_layers(model):
        callbacks.insert(0, recalibration)
    t0 = time.perf_counter()
    history = model.fit(
        fit_data(strategy, worker, train, start_epoch=start),  # the resumed epoch's batches, not epoch 0's
        steps_per_epoch=len(train),
        initial_epoch=start,
        epochs=cfg.epochs,
        validation_data=fit_data(strategy, worker, val),
        validation_steps=len(val),
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    trained = len(history.history.get("loss", []))  # epochs run by this process, for the speed
    if not worker.chief:  # the chief evaluates and writes the results; nothing collective is left
        live.end()
        print(f"{member.tag}: worker {worker.index} of {worker.count} done in {seconds:.0f}s", flush=True)
        return None

    best = keras.saving.load_model(model_path)
    scores = best.evaluate(tf_dataset(val, repeat=False), steps=len(val), verbose=0, return_dict=True)
    h = state.history  # every epoch of the run, resumed or not
    epochs_run = len(h["loss"])
    metrics = {
        "val_map_at_3": scores["map_at_3"],
        "val_accuracy": scores["accuracy"],
        "val_top3": scores["top3"],
        "val_loss": scores["loss"],
        "epochs_run": epochs_run,
        "seconds": round(seconds, 1),
        "images_per_s": round(trained * images / seconds, 1) if seconds else 0.0,
        "bn_recalibration_seconds": round(recalibration.seconds, 1),
        "stopped_by_time_budget": bool(budget and budget[0].stopped_epoch is not None),
        "time_budget_used_s": round(budget[0].elapsed_s, 1) if budget else None,  # to the last epoch's end
    }
    meta = {
        "model": cfg.model,
        "width": cfg.width,
        "input_shape": list(shape),
        "classes": classes,
        "render": cache["render"],
        "device": device,
        "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
        "history": h,
    }
    if member.name:  # an ensemble member: which fold and seed, and the shards it never trained on
        meta["member"] = {
            "name": member.name,
            "fold": member.fold,
            "seed": cfg.seed,
            "val_shards": list(member.held_out),
        }
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    live.end()
    if member.name:
        print(
            f"{member.tag}: best val MAP@3 {metrics['val_map_at_3']:.4f} after {epochs_run} epochs "
            f"in {seconds:.0f}s -> {model_path}",
            flush=True,
        )
    return metrics, best


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    _cli.run(main)
