"""Training one model (:func:`train_member`): the single model of the train stage, or one member of
a cross-validation or seed ensemble (doodle.train.ensemble), trained the same way.

Builds and compiles the model, feeds it the training stream (cache images or strokes drawn on the
fly, doodle.train.feed), decides each epoch on the validation MAP@3 (ReduceLROnPlateau, EarlyStopping,
the time budget), recalibrates BatchNorm, logs to DVCLive, and keeps a resumable state
(doodle.train.resume): a killed run continues after its last completed epoch and ends with the same
model, history and curves as an uninterrupted one. The best model and its metadata are written to
the member's files.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from doodle.batches.cache import CacheParams, CacheSplit
from doodle.batches.stream import tf_dataset
from doodle.batches.strokes import DrawnSplit
from doodle.core.params import ParamError
from doodle.models import build_model

from .batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers
from .callbacks import EpochLog, LiveLog, StepProgress, TimeBudget
from .feed import fit_data, training_stream, validation_stream
from .keras_metrics import MapAt3, SmoothedSparseCrossentropy
from .params import TrainParams, Worker, make_optimizer
from .resume import TrainingState, reopen_live

# in reports/train.json, never in models/ (whether train.time_budget_s stopped the run depends on timings too)
TIMINGS = ("seconds", "images_per_s", "bn_recalibration_seconds", "stopped_by_time_budget", "time_budget_used_s")
RECALIBRATION_EPOCHS = 1_000_000  # the recalibration stream's epochs: apart from the training ones


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
    val_split: CacheSplit | DrawnSplit  # DrawnSplit: a fold's held-out shards, drawn on the fly
    train_split: CacheSplit | list[Path] | None = None  # None: the train shards (cache or on the fly);
    # a fold's: its cache images, or with render.train_cache: false its shard files
    held_out: tuple[int, ...] = ()  # the shards it never trains on
    fingerprint: dict = field(default_factory=dict)  # what else makes its resume backup its own

    @property
    def tag(self) -> str:
        return f"train [{self.name}]" if self.name else "train"


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
    val = validation_stream(val_split, local, cfg.val_steps)  # all of it, on every worker
    shape = train.image_shape
    shared, role = "", ""
    if worker.count > 1:
        shared = f" ({local} on each of {worker.count} workers)"
        role = f"; this is worker {worker.index}{' (the chief)' if worker.chief else ''}"
    drawn = "drawings (drawn on the fly)"
    print(
        f"{member.tag}: {cfg.model} on {shape}, {len(classes)} classes, {train.rows:,} train "
        f"{'images' if source == 'cache' else drawn} / "
        f"{val_split.rows:,} val {drawn if isinstance(val_split, DrawnSplit) else 'images'}; device: {device}; "
        f"batch {batch}{shared} x {len(train)} steps x {cfg.epochs} epochs{role}",
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
        "train_rows": train.rows,  # images, or drawings drawn on the fly
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
