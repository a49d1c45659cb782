"""Training: devices, optimizers, params and the per-epoch logging around ``model.fit``.

Resumption lives in :mod:`doodle.resume`: after every epoch the complete state of the run is saved
(weights, optimizer, random seeds, best score, early-stopping and learning-rate counters), so a killed
run restarted with the same params ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field

import keras

from .augment import StrokeAugmentParams
from .models import AugmentParams
from .params import require


@dataclass
class TrainParams:
    """params.yaml section ``train``; the defaults are params.yaml's values."""

    model: str = "cnn"
    width: float = 0.25
    batch_size: int = 128
    epochs: int = 8
    steps_per_epoch: int | None = None  # null = one full pass over the training cache
    val_steps: int | None = None  # null = the whole validation cache
    optimizer: str = "adam"
    learning_rate: float = 0.003
    label_smoothing: float = 0.0
    schedule: str = "plateau"  # plateau | cosine | onecycle | constant
    early_stopping_patience: int = 4
    mixed_precision: bool = True  # float16/bfloat16 compute, on GPUs only
    seed: int = 0
    shuffle_block_rows: int = 512
    shuffle_buffer_blocks: int = 64
    stroke_buffer_groups: int = 4  # on-the-fly input: shuffle buffer in parquet row groups
    render_threads: int | None = None  # on-the-fly input: threads drawing each batch (None = one per core)
    stroke_augment: dict = field(default_factory=lambda: asdict(StrokeAugmentParams()))
    bn_recalibration_batches: int = 20  # recompute BatchNorm statistics each epoch (doodle.batchnorm); 0 = off
    augment: dict = field(default_factory=lambda: asdict(AugmentParams()))

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
        require(self.bn_recalibration_batches >= 0, f"{where}.bn_recalibration_batches", "must be >= 0")
        self.augment_params = from_mapping(AugmentParams, self.augment, f"{where}.augment")
        require(self.stroke_buffer_groups >= 1, f"{where}.stroke_buffer_groups", "must be >= 1")
        require(self.render_threads is None or self.render_threads >= 1, f"{where}.render_threads", "must be >= 1")
        self.stroke_augment_params = from_mapping(StrokeAugmentParams, self.stroke_augment, f"{where}.stroke_augment")

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


class _Timed(keras.callbacks.Callback):
    """Times each epoch, for the images/s of the DVCLive row and of the printed line."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images = images_per_epoch
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def elapsed(self) -> tuple[float, float]:
        """(seconds, images/s) since the epoch began."""
        seconds = time.perf_counter() - self.t0
        return seconds, self.images / seconds if seconds else 0.0


class LiveLog(_Timed):
    """One DVCLive row per epoch (metrics, learning rate, images/s) for `dvc plots` / `dvc metrics`.

    Put it before ``TrainingState``: a row is then never missing after a kill, and a row whose epoch
    was not saved is dropped on resume (``doodle.resume.reopen_live``).
    """

    def __init__(self, live, images_per_epoch: int):
        super().__init__(images_per_epoch)
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        # The rate this epoch trained with. ReduceLROnPlateau (first in the list) has already logged it,
        # before lowering it for the next epoch; for the other schedules it is read here. Set in `logs`
        # itself, so the saved history and the printed line show the same value.
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        for k, v in logs.items():
            split = "val" if k.startswith("val_") else "train"
            self.live.log_metric(f"{split}/{k.removeprefix('val_')}", float(v))
        self.live.log_metric("images_per_s", self.elapsed()[1])
        self.live.next_step()


class EpochLog(_Timed):
    """The ``epoch i/N done:`` line. Put it after ``TrainingState``: a printed epoch survives a kill."""

    def __init__(self, images_per_epoch: int, epochs: int, printer=print):
        super().__init__(images_per_epoch)
        self.epochs = epochs
        self.printer = printer

    def on_epoch_end(self, epoch, logs=None):
        seconds, speed = self.elapsed()
        lr = logs.get("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
        self.printer(
            f"epoch {epoch + 1}/{self.epochs} done: {shown} lr={lr:.2e} {seconds:.1f}s {speed:,.0f} img/s",
            flush=True,
        )


def steps_for(rows: int, batch: int) -> int:
    return max(1, math.ceil(rows / batch))
