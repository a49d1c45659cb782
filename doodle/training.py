"""Training: devices, callbacks, resumption and live metrics around ``model.fit``.

Resumption: Keras' ``BackupAndRestore`` saves model, optimizer and epoch after every epoch; a
killed run restarted with the same params continues from the next epoch. The backup carries a
fingerprint of everything that defines the run (params, data), and is discarded when that
changes, so an edited params.yaml never resumes a stale run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from .models import AugmentParams
from .params import require

log = logging.getLogger(__name__)


@dataclass
class TrainParams:
    """params.yaml section ``train``."""

    model: str = "cnn"
    width: float = 1.0
    batch_size: int = 256
    epochs: int = 10
    steps_per_epoch: int | None = None  # null = one full pass over the training cache
    val_steps: int | None = None  # null = the whole validation cache
    optimizer: str = "adam"
    learning_rate: float = 0.002
    label_smoothing: float = 0.0
    schedule: str = "plateau"  # plateau | cosine | onecycle | constant
    early_stopping_patience: int = 5
    mixed_precision: bool = True  # float16/bfloat16 compute, on GPUs only
    seed: int = 0
    shuffle_block_rows: int = 512
    shuffle_buffer_blocks: int = 64
    augment: dict = field(default_factory=dict)

    def validate(self, where: str = "train") -> None:
        from .models import ARCHITECTURES
        from .params import from_mapping

        require(
            self.model in ARCHITECTURES,
            f"{where}.model",
            f"unknown model {self.model!r}; choose one of {sorted(ARCHITECTURES)}",
        )
        require(
            self.optimizer in ("adam", "adamw", "sgd", "rmsprop"),
            f"{where}.optimizer",
            f"unknown optimizer {self.optimizer!r}",
        )
        require(
            self.schedule in ("plateau", "cosine", "onecycle", "constant"),
            f"{where}.schedule",
            f"unknown schedule {self.schedule!r}",
        )
        require(self.batch_size >= 1 and self.epochs >= 1, where, "batch_size and epochs must be >= 1")
        require(self.learning_rate > 0, f"{where}.learning_rate", "must be > 0")
        require(0 <= self.label_smoothing < 1, f"{where}.label_smoothing", "must be in [0, 1)")
        require(self.width > 0, f"{where}.width", "must be > 0")
        self.augment_params = from_mapping(AugmentParams, self.augment, f"{where}.augment")

    def fingerprint(self, extra: dict) -> str:
        blob = json.dumps({"train": asdict(self), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def device_strategy(mixed_precision: bool):
    """(strategy, description): MirroredStrategy over every visible GPU, else the default one.

    TensorFlow-only: with another Keras backend the default (single device) strategy is used.
    """
    if keras.backend.backend() != "tensorflow":
        return None, f"{keras.backend.backend()} backend, default device"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        strategy = tf.distribute.MirroredStrategy()
        policy = "float32"
        if mixed_precision:
            major = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))[0]
            policy = "mixed_bfloat16" if major >= 8 else "mixed_float16"
            keras.mixed_precision.set_global_policy(policy)
        return strategy, f"{len(gpus)} GPU(s), MirroredStrategy, {policy}"
    return tf.distribute.get_strategy(), "CPU, default strategy, float32"


def make_optimizer(cfg: TrainParams, steps_per_epoch: int):
    lr = cfg.learning_rate
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total, alpha=0.01)
    elif cfg.schedule == "onecycle":
        warm = max(1, total // 5)
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 10,
            decay_steps=total - warm,
            alpha=0.001,
            warmup_target=cfg.learning_rate,
            warmup_steps=warm,
        )
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "rmsprop": keras.optimizers.RMSprop,
    }[cfg.optimizer](learning_rate=lr)


class EpochLog(keras.callbacks.Callback):
    """Per-epoch line (metrics, images/s) and DVCLive logging for `dvc plots` / `dvc metrics`."""

    def __init__(self, live, images_per_epoch: int, epochs: int, printer=print):
        super().__init__()
        self.live = live
        self.images = images_per_epoch
        self.epochs = epochs
        self.printer = printer
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.perf_counter() - self.t0
        speed = self.images / seconds if seconds else 0.0
        lr = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        if self.live is not None:
            for k, v in logs.items():
                split = "val" if k.startswith("val_") else "train"
                self.live.log_metric(f"{split}/{k.removeprefix('val_')}", float(v))
            self.live.log_metric("images_per_s", speed)
            self.live.next_step()
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
        self.printer(
            f"epoch {epoch + 1}/{self.epochs} done: {shown} lr={logs['learning_rate']:.2e} "
            f"{seconds:.1f}s {speed:,.0f} img/s",
            flush=True,
        )


def prepare_backup(backup_dir: Path, fingerprint: str) -> bool:
    """Keep a backup only if it belongs to this exact run; True when there is one to resume."""
    stamp = backup_dir / "fingerprint"
    if backup_dir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        log.info("discarding backup from a different run in %s", backup_dir)
        shutil.rmtree(backup_dir)
    resuming = backup_dir.exists() and any(p.name != "fingerprint" for p in backup_dir.iterdir())
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return resuming


def steps_for(rows: int, batch: int) -> int:
    return max(1, math.ceil(rows / batch))
