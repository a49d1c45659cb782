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
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from doodle.batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers
from doodle.cache import CacheParams, open_split, read_cache_manifest
from doodle.callbacks import EpochLog, LiveLog, StepProgress, TimeBudget
from doodle.datasets import BatchStream, tf_dataset
from doodle.inputs import CACHE, fit_data, training_stream
from doodle.metrics import MapAt3, SmoothedSparseCrossentropy
from doodle.models import build_model
from doodle.params import ParamError, load_section, read_params
from doodle.resume import TrainingState, reopen_live
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
    if worker.chief:
        train_model(cfg, render_cfg, strategy, device, worker, Path("."), progress=not args.quiet)
        return
    # Not the chief: the same training, its files in a scratch directory (see the module doc).
    scratch = Path(tempfile.mkdtemp(prefix=f"doodle-train-worker{worker.index}-"))
    try:
        train_model(cfg, render_cfg, strategy, device, worker, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_model(
    cfg: TrainParams,
    render_cfg: CacheParams,
    strategy,
    device: str,
    worker: Worker,
    out: Path,
    progress: bool = False,
) -> None:
    """Train and write the outputs under ``out`` (the project for the chief, a scratch directory else)."""
    model_path, meta_path, backup, live_dir = (out / p for p in (MODEL, META, BACKUP, LIVE))
    keras.utils.set_random_seed(cfg.seed)
    cache = read_cache_manifest(CACHE)
    classes = cache["classes"]
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch = cfg.batch_size * replicas  # the global batch: over every replica of every worker
    local = batch // worker.count  # this worker's share of it

    val_split = open_split(CACHE, "val")
    train, source = training_stream(cfg, render_cfg, cache, local, worker)
    val = BatchStream(val_split, local, shuffle=False, steps=cfg.val_steps)  # all of it, on every worker
    shape = train.image_shape
    shared, role = "", ""
    if worker.count > 1:
        shared = f" ({local} on each of {worker.count} workers)"
        role = f"; this is worker {worker.index}{' (the chief)' if worker.chief else ''}"
    print(
        f"train: {cfg.model} on {shape}, {len(classes)} classes, {train.rows:,} train "
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
        }
    )
    if worker.count > 1 and backup.exists():
        # Every worker must start at the same epoch, and the others keep no backup: start over.
        print(f"train: multi-worker runs do not resume; deleting {backup}", flush=True)
        shutil.rmtree(backup)
    state = TrainingState(backup, fingerprint, best_model=model_path, monitor="val_map_at_3", track=decisions)
    start = cfg.epochs if state.stopped else state.epochs_done
    live = reopen_live(live_dir, state.epochs_done, save_dvc_exp=False, dvcyaml=None)
    resumed = f"; resuming from backup after epoch {state.epochs_done}" if state.epochs_done else ""
    print(f"train: {model.count_params():,} parameters{resumed}", flush=True)

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
        StepProgress(len(train), batch, cfg.epochs, cfg.time_budget_s, bar=progress),
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
        print(f"train: worker {worker.index} of {worker.count} done in {seconds:.0f}s", flush=True)
        return

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
    _cli.write_metrics("train", metrics, headline=("val_map_at_3", "epochs_run"), root=out)
    meta_path.write_text(
        json.dumps(
            {
                "model": cfg.model,
                "width": cfg.width,
                "input_shape": list(shape),
                "classes": classes,
                "render": cache["render"],
                "device": device,
                "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
                "history": h,
            },
            indent=2,
        )
        + "\n"
    )
    live.end()
    shutil.rmtree(backup, ignore_errors=True)  # a finished run leaves nothing to resume
    print(
        f"train: best val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_accuracy']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} after {epochs_run} epochs in {seconds:.0f}s -> {MODEL}"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    _cli.run(main)
