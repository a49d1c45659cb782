"""Stage `train`: train a Keras model on the render cache (models/model.keras + metadata).

Rerunning after a kill resumes from the last completed epoch (see doodle.training).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from doodle.cache import open_split, read_cache_manifest
from doodle.datasets import BatchStream, tf_dataset
from doodle.metrics import MapAt3, SmoothedSparseCrossentropy
from doodle.models import build_model
from doodle.params import load_section, read_params
from doodle.training import EpochLog, TrainParams, device_strategy, make_optimizer, prepare_backup
from stages import _cli

CACHE = Path("data/cache")
MODEL = Path("models/model.keras")
META = Path("models/model.json")
BACKUP = Path("models/backup")
METRICS = Path("metrics/train.json")
LIVE = Path("dvclive")


def main(argv=None) -> None:
    args = _cli.parser(__doc__).parse_args(argv)
    _cli.setup_logging()
    cfg = load_section(TrainParams, "train", read_params(args.params))
    keras.utils.set_random_seed(cfg.seed)
    cache = read_cache_manifest(CACHE)
    classes = cache["classes"]
    strategy, device = device_strategy(cfg.mixed_precision)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch = cfg.batch_size * replicas

    train_split, val_split = open_split(CACHE, "train"), open_split(CACHE, "val")
    train = BatchStream(
        train_split,
        batch,
        shuffle=True,
        seed=cfg.seed,
        steps=cfg.steps_per_epoch,
        block_rows=cfg.shuffle_block_rows,
        buffer_blocks=cfg.shuffle_buffer_blocks,
    )
    val = BatchStream(val_split, batch, shuffle=False, steps=cfg.val_steps)
    shape = train.image_shape
    print(
        f"train: {cfg.model} on {shape}, {len(classes)} classes, {train_split.rows:,} train / "
        f"{val_split.rows:,} val images; device: {device}; batch {batch} x {len(train)} steps x "
        f"{cfg.epochs} epochs",
        flush=True,
    )

    fingerprint = cfg.fingerprint({"cache": cache["render"], "rows": cache["rows"], "files": cache["files"]})
    resuming = prepare_backup(BACKUP, fingerprint)
    if not resuming and LIVE.exists():
        shutil.rmtree(LIVE)
    from dvclive import Live

    live = Live(str(LIVE), resume=resuming, save_dvc_exp=False, dvcyaml=None)

    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        model = build_model(cfg.model, shape, len(classes), width=cfg.width, augment=cfg.augment_params, seed=cfg.seed)
        model.compile(
            optimizer=make_optimizer(cfg, len(train)),
            loss=SmoothedSparseCrossentropy(cfg.label_smoothing),
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(3, name="top3"), MapAt3()],
        )
    print(f"train: {model.count_params():,} parameters" + ("; resuming from backup" if resuming else ""), flush=True)
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(MODEL, monitor="val_map_at_3", mode="max", save_best_only=True),
        keras.callbacks.EarlyStopping(
            monitor="val_map_at_3", mode="max", patience=cfg.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.BackupAndRestore(str(BACKUP)),
        EpochLog(live, len(train) * batch, cfg.epochs),
    ]
    if cfg.schedule == "plateau":
        callbacks.insert(
            0,
            keras.callbacks.ReduceLROnPlateau(monitor="val_map_at_3", mode="max", factor=0.5, patience=2, min_lr=1e-5),
        )
    t0 = time.perf_counter()
    history = model.fit(
        tf_dataset(train, repeat=True),
        steps_per_epoch=len(train),
        epochs=cfg.epochs,
        validation_data=tf_dataset(val, repeat=False),
        validation_steps=len(val),
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    seconds = time.perf_counter() - t0

    best = keras.saving.load_model(MODEL)
    scores = best.evaluate(tf_dataset(val, repeat=False), steps=len(val), verbose=0, return_dict=True)
    h = history.history
    epochs_run = len(h.get("loss", []))
    metrics = {
        "val_map_at_3": scores["map_at_3"],
        "val_accuracy": scores["accuracy"],
        "val_top3": scores["top3"],
        "val_loss": scores["loss"],
        "epochs_run": epochs_run,
        "seconds": round(seconds, 1),
        "images_per_s": round(epochs_run * len(train) * batch / seconds, 1) if seconds else 0.0,
    }
    METRICS.parent.mkdir(exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    META.write_text(
        json.dumps(
            {
                "model": cfg.model,
                "width": cfg.width,
                "input_shape": list(shape),
                "classes": classes,
                "render": cache["render"],
                "device": device,
                "metrics": {k: v for k, v in metrics.items() if k not in ("seconds", "images_per_s")},
                "history": {k: [float(v) for v in vals] for k, vals in h.items()},
            },
            indent=2,
        )
        + "\n"
    )
    live.end()
    shutil.rmtree(BACKUP, ignore_errors=True)  # a finished run leaves nothing to resume
    print(
        f"train: best val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_accuracy']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} after {epochs_run} epochs in {seconds:.0f}s -> {MODEL}"
    )


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    _cli.run(main)
