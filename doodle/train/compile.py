"""How the train stage compiles a model and what runs around its ``model.fit``: the optimizer and
its learning-rate schedule, the loss and metrics, and the callbacks in the order they must run.

One place for both, so that every model of a run (the single model, each ensemble member) and the
throughput benchmark (benchmarks/train_throughput.py) train with exactly the same code.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import keras

from doodle.models import build_model

from .batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers
from .callbacks import EpochLog, LiveLog, StepProgress, TimeBudget
from .keras_metrics import MapAt3, SmoothedSparseCrossentropy
from .params import TrainParams
from .resume import TrainingState, reopen_live

MONITOR = "val_map_at_3"  # what every decision of a run (best model, early stop, plateau) is taken on
RECALIBRATION_EPOCHS = 1_000_000  # the recalibration stream's epochs: apart from the training ones


def make_optimizer(cfg: TrainParams, steps_per_epoch: int):
    """``train.optimizer`` at ``train.learning_rate``, with the ``train.schedule`` over the run's steps
    (``plateau`` and ``constant`` keep a plain rate: ReduceLROnPlateau changes it as a callback)."""
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


def compiled_model(cfg: TrainParams, input_shape, num_classes: int, steps_per_epoch: int, strategy=None):
    """``train.model`` built (seeded ``cfg.seed``) and compiled for training: the optimizer, the
    label-smoothed loss, and accuracy, top-3 and MAP@3, whose validation value decides the run.
    Both happen in the strategy's scope, so that its variables are created once per replica."""
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = build_model(
            cfg.model, input_shape, num_classes, width=cfg.width, augment=cfg.augment_params, seed=cfg.seed
        )
        model.compile(
            optimizer=make_optimizer(cfg, steps_per_epoch),
            loss=SmoothedSparseCrossentropy(cfg.label_smoothing),
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(3, name="top3"), MapAt3()],
        )
    return model


def decision_callbacks(cfg: TrainParams) -> list:
    """The callbacks that decide on each epoch's validation MAP@3: ReduceLROnPlateau (``train.schedule:
    plateau``), then EarlyStopping. :class:`~doodle.train.resume.TrainingState` saves their counters,
    and keeps the best model itself, so EarlyStopping keeps no best weights."""
    stop = keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.early_stopping_patience)
    if cfg.schedule != "plateau":
        return [stop]
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=MONITOR, mode="max", factor=0.5, patience=2, min_lr=1e-5)
    return [plateau, stop]


def recalibration_batches(train, count: int, sharded=None):
    """``batches(epoch)`` for :class:`~doodle.train.batchnorm.RecalibrateBatchNorm`: ``count`` batches of
    training images from epochs of their own (deterministic per epoch, so a resumed run recalibrates
    exactly as an uninterrupted one). ``sharded`` (:func:`~doodle.train.strategy.sharded_batches`):
    under a ``keras.distribution``, each process reads its own share of every batch and ``sharded``
    makes them one array split over every device, so the statistics are the global batch's, as in a
    training step, on one machine or several. Else every worker reads every batch of the stream
    (``own=False``), so that the statistics agree everywhere."""

    def batches(epoch: int):
        if sharded is not None:
            return (sharded(x) for x, _ in itertools.islice(train.epoch(RECALIBRATION_EPOCHS + epoch), count))
        return (x for x, _ in itertools.islice(train.epoch(RECALIBRATION_EPOCHS + epoch, own=False), count))

    return batches


@dataclass(frozen=True)
class FitCallbacks:
    """The callbacks of one ``model.fit`` (``all``, in the order they run), and those whose state or
    figures the run reads afterwards."""

    all: list
    state: TrainingState  # the resumable state: epochs done, history, best model
    live: object  # the DVCLive run, ended by the caller once its results are written
    recalibration: RecalibrateBatchNorm  # its seconds are reported (it runs only on BatchNorm models)
    budget: TimeBudget | None  # train.time_budget_s, if set: whether and when it stopped the run


def fit_callbacks(
    cfg: TrainParams,
    model,
    train,
    batch: int,
    fingerprint: str,
    backup: Path,
    best_model: Path,
    live_dir: Path,
    progress: bool = False,
    printer=print,
    sharded=None,
) -> FitCallbacks:
    """The train stage's callbacks around ``model.fit`` of ``model`` on the stream ``train`` (``batch``:
    the global batch), its resumable state in ``backup`` (a state of another ``fingerprint`` is
    discarded) with the best model copied to ``best_model``, and DVCLive rows in ``live_dir``.

    Their order is what makes a rerun exact. After an epoch's last step, before validation, BatchNorm
    is recalibrated. At the epoch end: decide (plateau, early stopping, the time budget), write the
    DVCLive row, save it all, then print the "epoch i/N done" line, so that a printed epoch is one a
    rerun continues after and a budget stop is saved with its epoch."""
    decisions = decision_callbacks(cfg)
    state = TrainingState(backup, fingerprint, best_model=best_model, monitor=MONITOR, track=decisions)
    live = reopen_live(live_dir, state.epochs_done, save_dvc_exp=False, dvcyaml=None)
    recalibration = RecalibrateBatchNorm(recalibration_batches(train, cfg.bn_recalibration_batches, sharded))
    budget = TimeBudget(cfg.time_budget_s, printer=printer) if cfg.time_budget_s else None
    callbacks = [
        *decisions,
        *([budget] if budget else []),
        LiveLog(live, len(train), batch, budget),
        state,
        EpochLog(len(train), batch, cfg.epochs, budget, printer=printer),
        ChanceWatch(model.output_shape[-1], printer=printer),
        StepProgress(len(train), batch, cfg.epochs, cfg.time_budget_s, bar=progress, printer=printer),
    ]
    if cfg.bn_recalibration_batches and batchnorm_layers(model):
        callbacks.insert(0, recalibration)
    return FitCallbacks(callbacks, state, live, recalibration, budget)
