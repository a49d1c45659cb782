"""Training one model (:func:`train_member`): the single model of the train stage, or one member of
a cross-validation or seed ensemble (doodle.train.ensemble), trained the same way.

Builds and compiles the model (doodle.train.compile), feeds it the training stream (cache images or
strokes drawn on the fly, doodle.train.feed), decides each epoch on the validation MAP@3
(ReduceLROnPlateau, EarlyStopping, the time budget), recalibrates BatchNorm, logs to DVCLive, and
keeps a resumable state (doodle.train.resume): a killed run continues after its last completed epoch
and ends with the same model, history and curves as an uninterrupted one. The best model and its
metadata are written to the member's files. The params were checked against the data before any of
this (:func:`doodle.train.ensemble.check_run`), so a member fails only on what only training finds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from doodle.batches.cache import CacheSplit
from doodle.batches.strokes import DrawnSplit
from doodle.drawing.sequence import encoder_spec
from doodle.render.params import RenderSection

from .compile import FitCallbacks, compiled_model, fit_callbacks
from .feed import fit_data, replicas, training_stream, validation_stream
from .params import TrainParams
from .strategy import Worker, alone, barrier, sharded_batches

# in reports/train/<name>.json, never in models/ (whether train.time_budget_s stopped the run depends on timings too)
TIMINGS = (
    "seconds",
    "images_per_s",
    "bn_recalibration_seconds",
    "stopped_by_time_budget",
    "time_budget_used_s",
    "final_val_seconds",
)


@dataclass(frozen=True)
class Setup:
    """What every model of a run shares."""

    render: RenderSection
    encoder: object  # what the models read (TrainParams.encoder): render or sequence params
    strategy: object
    device: str
    worker: Worker
    cache: dict  # the render cache's manifest
    shards: dict  # the shards' manifest
    cache_dir: Path  # where they are: the stage passes the project's (doodle.core.paths)
    shards_dir: Path
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


def train_member(cfg: TrainParams, run: Setup, member: Member, score: Callable[[object], dict]):
    """Train ``member``; write its best model and metadata. ``score(best model)`` scores it on the
    member's whole validation split, once, after training (the per-epoch decisions read the first
    ``train.val_rows`` drawings of it); it returns the ``val_*`` figures of
    :meth:`doodle.core.metrics.StreamingScores.results`. Returns (metrics, best model) on the chief,
    None on the other workers."""
    keras.utils.set_random_seed(cfg.seed)
    worker, batch = run.worker, global_batch(cfg, run.strategy)
    local = batch // worker.count  # this worker's share of it
    train, source = training_stream(cfg, run.render, local, run.cache_dir, run.shards_dir, worker, member.train_split)
    val_split = member.val_split
    val = validation_stream(val_split, local, val_steps(cfg.val_rows, val_split.rows, local))  # same on every worker
    print(start_line(cfg, run, member, train, source, batch), flush=True)
    model = compiled_model(cfg, train.image_shape, len(run.cache["classes"]), len(train), run.strategy)
    fingerprint = resume_fingerprint(cfg, run.cache, source, model, batch, member.fingerprint)
    if worker.count > 1 and member.backup.exists():
        # Every worker must start at the same epoch, and the others keep no backup: start over.
        print(f"{member.tag}: multi-worker runs do not resume; deleting {member.backup}", flush=True)
        shutil.rmtree(member.backup)
    files = (member.backup, member.model, member.live)
    sharded = sharded_batches(run.strategy)
    callbacks = fit_callbacks(cfg, model, train, batch, fingerprint, *files, progress=run.progress, sharded=sharded)
    done = callbacks.state.epochs_done
    resumed = f"; resuming from backup after epoch {done}" if done else ""
    print(f"{member.tag}: {model.count_params():,} parameters{resumed}", flush=True)
    fitted = fit(model, cfg, run, train, val, callbacks, batch)
    result = None
    if worker.chief:  # the chief evaluates and writes the results
        result = finish(cfg, run, member, train, callbacks, fitted, score)
    else:
        callbacks.live.end()
        print(f"{member.tag}: worker {worker.index} of {worker.count} done in {fitted.seconds:.0f}s", flush=True)
    barrier(run.strategy, f"{member.tag} written")  # under JAX the others wait while the chief does it
    return result


def val_steps(val_rows: int | None, rows: int, batch: int) -> int:
    """Validation batches an epoch: enough for the first ``train.val_rows`` of the split's ``rows``
    drawings (null: all of them, never more: a stream of more steps would go round again). A fixed
    subset, the same every epoch: a uniform sample, as the shards are shuffled."""
    return -(-min(rows, val_rows or rows) // batch)


def global_batch(cfg: TrainParams, strategy) -> int:
    """``train.batch_size`` is per replica: the global batch is over every replica of every worker."""
    return cfg.batch_size * replicas(strategy)


def start_line(cfg: TrainParams, run: Setup, member: Member, train, source, batch: int) -> str:
    """What is trained on what, where, and how long: the member's first line."""
    worker, val_split = run.worker, member.val_split
    shared, role = "", ""
    if worker.count > 1:
        shared = f" ({batch // worker.count} on each of {worker.count} workers)"
        role = f"; this is worker {worker.index}{' (the chief)' if worker.chief else ''}"
    made = f"{'drawn' if run.encoder.draws_images else 'encoded'} on the fly"
    n = cfg.input_processes
    in_processes = f" in {n} process{'es' if n > 1 else ''}" if n and source != "cache" else ""
    return (
        f"{member.tag}: {cfg.model} on {train.image_shape}, {len(run.cache['classes'])} classes, {train.rows:,} train "
        f"{'images' if source == 'cache' else f'drawings ({made}{in_processes})'} / "
        f"{val_split.rows:,} val {f'drawings ({made})' if isinstance(val_split, DrawnSplit) else 'images'}; "
        f"device: {run.device}; "
        f"batch {batch}{shared} x {len(train)} steps x {cfg.epochs} epochs{role}"
    )


def resume_fingerprint(cfg: TrainParams, cache: dict, source, model, batch: int, extra: dict) -> str:
    """What a resume backup must have been made with to be continued (doodle.train.resume): the train
    params, the render cache, what training reads (``source``: the cache, or the shards drawn on the
    fly), the model's variables (a changed architecture never resumes), the global batch (another
    number of replicas is another run) and the member's ``extra`` (a fold's shards)."""
    data = {"cache": cache["render"], "rows": cache["rows"], "files": cache["files"], "train_source": source}
    shapes = {"variables": [list(v.shape) for v in model.variables], "batch": batch}
    blob = json.dumps({"train": asdict(cfg), **data, **shapes, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fitted:
    """What ``model.fit`` did in this process: a resumed run counts only the epochs it ran."""

    seconds: float
    epochs: int  # epochs run by this process
    images: int  # images trained by this process (an epoch the time budget cut counts its steps run)


def fit(model, cfg: TrainParams, run: Setup, train, val, callbacks: FitCallbacks, batch: int) -> Fitted:
    """``model.fit`` from the first epoch not in the resumed state (none left when it had stopped)."""
    strategy, worker, state = run.strategy, run.worker, callbacks.state
    start = cfg.epochs if state.stopped else state.epochs_done
    t0 = time.perf_counter()
    history = model.fit(
        fit_data(strategy, worker, train, start_epoch=start),  # the resumed epoch's batches, not epoch 0's
        steps_per_epoch=len(train),
        initial_epoch=start,
        epochs=cfg.epochs,
        validation_data=fit_data(strategy, worker, val),
        validation_steps=len(val),
        callbacks=callbacks.all,
        shuffle=False,
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    epochs = len(history.history.get("loss", []))
    steps = epochs * len(train)
    if callbacks.budget and callbacks.budget.cut_at_step is not None:  # the last epoch ended early
        steps -= len(train) - (callbacks.budget.cut_at_step + 1)
    return Fitted(seconds, epochs, steps * batch)


def finish(cfg: TrainParams, run: Setup, member: Member, train, callbacks: FitCallbacks, fitted: Fitted, score):
    """Score the best model (kept by the resumable state) on the whole validation split (``score``),
    write its metadata and end the DVCLive run. Returns (metrics, best model). The chief does this by
    itself (under JAX outside the processes' global distribution, the other workers waiting at a barrier)."""
    with alone(run.strategy):
        best = keras.saving.load_model(member.model)
        t0 = time.perf_counter()
        scores = score(best)
    metrics = member_metrics(scores, train.rows, callbacks, fitted)
    metrics["final_val_seconds"] = round(time.perf_counter() - t0, 1)
    write_meta(cfg, run, member, train.image_shape, metrics, callbacks.state.history)
    callbacks.live.end()
    if member.name:
        print(
            f"{member.tag}: best val MAP@3 {metrics['val_map_at_3']:.4f} after {metrics['epochs_run']} epochs "
            f"in {fitted.seconds:.0f}s -> {member.model}",
            flush=True,
        )
    return metrics, best


def member_metrics(scores: dict, train_rows: int, callbacks: FitCallbacks, fitted: Fitted) -> dict:
    """The best model's scores on the whole validation split (``val_loss``: cross-entropy without label
    smoothing), and the run's figures: its timings are :data:`TIMINGS`."""
    budget, seconds = callbacks.budget, fitted.seconds
    return {
        **{k: scores[k] for k in ("val_map_at_3", "val_accuracy", "val_top3", "val_loss", "val_rows")},
        "train_rows": train_rows,  # images, or drawings drawn on the fly
        "epochs_run": len(callbacks.state.history["loss"]),  # every epoch of the run, resumed or not
        "seconds": round(seconds, 1),
        "images_per_s": round(fitted.images / seconds, 1) if seconds else 0.0,
        "bn_recalibration_seconds": round(callbacks.recalibration.seconds, 1),
        "stopped_by_time_budget": bool(budget and budget.stopped_epoch is not None),
        "time_budget_used_s": round(budget.elapsed_s, 1) if budget else None,  # to the last epoch's end
    }


def write_meta(cfg: TrainParams, run: Setup, member: Member, shape, metrics: dict, history: dict) -> None:
    """The member's metadata beside its model: what predict needs to use it (classes, input shape,
    render params) and what it scored, without the timings (the same run always writes the same file)."""
    meta = {
        "model": cfg.model,
        "width": cfg.width,
        "input_shape": list(shape),
        "input": encoder_spec(run.encoder),  # how predict makes its input
        "classes": run.cache["classes"],
        "render": run.cache["render"],
        "device": run.device,
        "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
        "history": history,
    }
    if member.name:  # an ensemble member: which fold and seed, and the shards it never trained on
        meta["member"] = {
            "name": member.name,
            "fold": member.fold,
            "seed": cfg.seed,
            "val_shards": list(member.held_out),
        }
    member.meta.parent.mkdir(parents=True, exist_ok=True)
    member.meta.write_text(json.dumps(meta, indent=2) + "\n")
