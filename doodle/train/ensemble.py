"""The train stage's run: the single model, or ``train.folds`` K x ``train.seeds`` N members.

With K x N > 1, member ``fold{f}-seed{s}`` trains on fold f (the shards ``i % K == f`` held out,
doodle.train.folds) with seed ``train.seed + s``, each exactly as the single model is
(:func:`doodle.train.trainer.train_member`: callbacks, BatchNorm recalibration, resumable state), into
models/<name>/members/fold{f}-seed{s}.keras + .json. models/<name>/model.keras is then a copy of the reference
member (:func:`doodle.train.folds.reference_fold`), which the evaluate stage scores.
models/<name>/members/oof.parquet holds every held-out drawing's mean probabilities over its fold's members
(for the single model: the holdout's). The figures: the mean and standard deviation of the members'
val MAP@3 and the out-of-fold MAP@3, every member's in the full report.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from doodle.batches.cache import open_split
from doodle.batches.strokes import DrawnSplit, shard_paths
from doodle.core.params import ParamError
from doodle.core.plots import learning_curves
from doodle.core.report import StageResult
from doodle.render.format import require_same_render
from doodle.render.params import RenderSection, require_cache_for_images

from .folds import (
    FoldAccumulator,
    OofWriter,
    fold_shard_paths,
    member_name,
    open_fold,
    plan_folds,
    reference_fold,
    summarize_members,
)
from .params import TrainParams, check_against, trains_on_cache
from .strategy import Worker
from .trainer import Member, Setup, train_member

PREDICT_BATCH = 512  # images a call when predicting the held-out drawings


@dataclass(frozen=True)
class TrainFiles:
    """Where a run writes: under the project for the chief, under a scratch directory for the other
    workers of a multi-worker run (the stage lays it out: stages.train.train_files)."""

    root: Path
    model: Path
    meta: Path
    backup: Path  # the resume state (doodle.train.resume), removed when the run is done
    live: Path  # DVCLive: the reference member's curves; the others' under members/<name>/
    members: Path  # the members and the out-of-fold file: one dvc.yaml out
    oof: Path
    curves: Path  # every member's curves side by side (a dvc.yaml plot)


def check_run(
    cfg: TrainParams, render_cfg: RenderSection, cache: dict, shards: dict, worker: Worker, cache_dir: Path
) -> None:
    """Raise a one-line ParamError when the train params cannot train on this data, before anything
    starts (no device is set up, no model built, nothing written or cleared): the one place where
    the train params are checked against the render params, the render cache's manifest (``cache``),
    the shards' (``shards``) and the cluster (``worker``); ``cache_dir`` names the cache in messages.
    Each section's own values were checked when it was loaded (``TrainParams.validate``)."""
    encoder = cfg.encoder(render_cfg)
    on_the_fly = not trains_on_cache(render_cfg, encoder)
    check_against(cfg, render_cfg)  # what the params alone refuse (stages.check ran it before any stage)
    if cfg.folds > 1:  # enough shards with images for every fold to train and validate on
        plan_folds(cache, shards, cfg.folds, not on_the_fly, render_cfg.train_shards)
    if not cfg.reads_images and shards.get("content") == "images":
        raise ParamError(
            f"param train.model: {cfg.model} reads strokes, but the shards hold images "
            f"({shards.get('source_kind')} source): choose an image model"
        )
    if cfg.reads_images:  # trained on the cache's images, or drawn as they were: the same render
        if not render_cfg.draws_as(encoder) and shards.get("content") == "images":
            raise ParamError(
                f"param train.render: a model's own drawing params ({cfg.render}) draw from strokes, but the "
                f"shards hold images ({shards.get('source_kind')} source): leave it empty"
            )
        if on_the_fly:
            require_cache_for_images(False, shards)
        # the cache's images validate every model that draws as it; the others draw their own
        require_same_render(cache, render_cfg.raster(), cache_dir, "param render: the render params")
    if cfg.time_budget_s and worker.count > 1:
        # Each worker would read its own clock, and workers that disagree on stopping would hang.
        raise ParamError("param train.time_budget_s: not supported with train.strategy multi_worker; use null")


def train_models(cfg: TrainParams, run: Setup, files: TrainFiles) -> StageResult | None:
    """Train the single model, or with train.folds or train.seeds > 1 the ensemble. Returns the
    figures on the chief, None on the other workers. The resume backup (``files.backup``) is left
    for the caller to delete once the figures are written: a run killed before that resumes."""
    if cfg.folds > 1 or cfg.seeds > 1:
        return train_ensemble(cfg, run, files)
    return train_single(cfg, run, files)


def train_single(cfg: TrainParams, run: Setup, files: TrainFiles) -> StageResult | None:
    """The one model on the shard.val_shards holdout: models/<name>/model.keras, and the holdout's
    probabilities in the out-of-fold file (for stacking, like an ensemble's)."""
    if run.worker.chief:  # stale members would be averaged by predict's ``models: auto``
        clear_members(files.members)
    val_split = holdout_split(run, cfg.render_threads)
    member = Member("", 0, files.model, files.meta, files.backup, files.live, val_split)
    classes = len(run.cache["classes"])
    acc = FoldAccumulator(files.members / ".oof-fold0.npy", val_split, classes) if run.worker.chief else None
    try:
        result = train_member(cfg, run, member, whole_split_scorer(acc))
        if result is None:
            return None
        metrics, _ = result
        oof = OofWriter(files.oof, classes)  # the one pass over the split (the scorer's) gave its rows
        oof.add_fold(0, acc)
        oof.close()
    finally:
        if acc is not None:
            acc.close()
    write_curves(files.curves, {"model": files.meta})
    line = (
        f"train: best val MAP@3 {metrics['val_map_at_3']:.4f}, top-1 {metrics['val_accuracy']:.4f}, "
        f"top-3 {metrics['val_top3']:.4f} after {metrics['epochs_run']} epochs in {metrics['seconds']:.0f}s "
        f"-> {files.model.relative_to(files.root)}"
    )
    return StageResult(metrics, ("val_map_at_3", "epochs_run"), line)


def whole_split_scorer(acc: FoldAccumulator | None):
    """``score(best model)`` for :func:`doodle.train.trainer.train_member`: one pass over the member's
    whole validation split that both scores it and adds its probabilities to the out-of-fold
    accumulator ``acc`` (None on the workers that are not the chief, which never score)."""
    return lambda model: acc.add(model.predict_on_batch, PREDICT_BATCH)


def holdout_split(run: Setup, threads: int | None = None):
    """The shard.val_shards holdout as the models read it: the cache's images for a model that draws
    as the cache, or the same drawings (the first ``render.max_per_shard`` of each shard) encoded
    on the fly, for a stroke model or an image model with its own ``train.render``."""
    if run.render.draws_as(run.encoder):
        return open_split(run.cache_dir, "val")
    return DrawnSplit(shard_paths(run.shards_dir, "val"), run.encoder, run.render.max_per_shard, threads)


def fold_splits(fold, run: Setup, threads: int | None = None):
    """(train, validation, held-out shard indices) of ``fold`` (None: the shard.val_shards holdout):
    its cache images, or with render.train_cache: false (and for a stroke model) its shard files and
    held-out drawings, drawn (encoded) on the fly."""
    if fold is None:
        return None, holdout_split(run, threads), tuple(run.shards["val_shards"])
    if trains_on_cache(run.render, run.encoder):
        train, val = open_fold(run.cache_dir, fold)
    else:
        train = fold_shard_paths(run.shards_dir, fold.train)
        held = fold_shard_paths(run.shards_dir, fold.val)
        val = DrawnSplit(held, run.encoder, run.render.max_per_shard, threads)
    return train, val, tuple(fold.val_shards)


def train_ensemble(cfg: TrainParams, run: Setup, files: TrainFiles) -> StageResult | None:
    """train.folds x train.seeds members (see the module doc).

    The reference member (seed 0 of :func:`doodle.train.folds.reference_fold`) trains first and is also
    copied to models/<name>/model.keras, with its curves in dvclive/<name>/; the others' curves are in
    dvclive/<name>/members/<member>/. Every member keeps its resume backup (models/backup/<name>/<member>) until the
    whole ensemble is done, so a killed ensemble reruns finished members in no time (0 epochs) and
    resumes the interrupted one exactly. Members add their probabilities per fold into the OOF
    file as soon as each is trained, so one model at a time is in memory.
    """
    shards, chief = run.shards, run.worker.chief
    if cfg.folds > 1:  # checked by check_run before the run started
        cached = trains_on_cache(run.render, run.encoder)
        folds = plan_folds(run.cache, shards, cfg.folds, cached, run.render.train_shards)
        ref = reference_fold(folds, shards["val_shards"])
    else:
        folds, ref = [None], 0  # seeds only: the shard.val_shards holdout, as the single model
    names = [member_name(f, s) for f in range(len(folds)) for s in range(cfg.seeds)]
    if chief:  # what an earlier run left (predict's ``models: auto`` would average stale members)
        clear_members(files.members)
        for stale in (files.live / "members").glob("*"):
            if stale.name not in names:
                shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    results = []
    oof = OofWriter(files.oof, len(run.cache["classes"])) if chief else None
    for f in [ref, *(f for f in range(len(folds)) if f != ref)]:
        results += train_fold(cfg, run, files, f, folds[f], f == ref, oof)
    if oof is None:  # not the chief
        return None
    oof.close()
    reference = member_name(ref, 0)
    for suffix, dst in ((".keras", files.model), (".json", files.meta)):
        src = files.members / f"{reference}{suffix}"
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    summary = summarize_members(results, oof, reference)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_curves(files.curves, {name: files.members / f"{name}.json" for name in names})
    line = (
        f"train: {len(results)} members ({len(folds)} fold(s) x {cfg.seeds} seed(s)), val MAP@3 "
        f"{summary['val_map_at_3']:.4f} +- {summary['val_map_at_3_std']:.4f}, out-of-fold MAP@3 "
        f"{summary['oof_map_at_3']:.4f} over {oof.rows:,} drawings in {summary['seconds']:.0f}s -> "
        f"{files.members.relative_to(files.root)}/, {files.model.relative_to(files.root)} = {reference}"
    )
    headline = ("val_map_at_3", "val_map_at_3_std", "oof_map_at_3", "epochs_run", "members")
    return StageResult(summary, headline, line)


def train_fold(
    cfg: TrainParams, run: Setup, files: TrainFiles, f: int, fold, reference: bool, oof: OofWriter | None
) -> list[dict]:
    """Train fold ``f``'s ``train.seeds`` members (``fold`` None: the shard.val_shards holdout), seeded
    ``train.seed + s``; each adds its probabilities of the fold's held-out drawings to the OOF file as
    soon as it is trained. ``reference``: the fold whose seed 0 has its curves in dvclive/<name>/. Returns
    the members' figures on the chief (``oof`` given), nothing on the other workers."""
    train_split, val_split, held = fold_splits(fold, run, cfg.render_threads)
    extra = {} if fold is None else {"fold": f, "train_files": fold.train, "val_files": fold.val}
    splits = {"val_split": val_split, "train_split": train_split, "held_out": held, "fingerprint": extra}
    # the fold's members' summed probabilities: each member adds its own as soon as it is trained
    acc = FoldAccumulator(files.members / f".oof-fold{f}.npy", val_split, oof.classes) if oof else None
    results = []
    for s in range(cfg.seeds):
        name = member_name(f, s)
        live = files.live if reference and s == 0 else files.live / "members" / name
        stem = files.members / name
        member = Member(
            name, f, stem.with_suffix(".keras"), stem.with_suffix(".json"), files.backup / name, live, **splits
        )
        member_cfg = replace(cfg, seed=cfg.seed + s)  # a new value: only the seed differs, valid as cfg is
        result = train_member(member_cfg, run, member, whole_split_scorer(acc))
        if result is None:  # not the chief: only the training itself, collectively
            continue
        metrics, best = result  # scored on all of its fold (val_rows), as it was added to the accumulator
        ids = {"name": name, "fold": f, "seed": member_cfg.seed, "val_shards": list(held)}
        results.append({**ids, **metrics})
        del best, result
        gc.collect()
    if oof is not None:
        oof.add_fold(f, acc)
        acc.close()
    return results


def write_curves(path: Path, metas: dict[str, Path]) -> Path:
    """reports/train/<name>_curves.png: MAP@3 and loss by epoch, one panel each, training (solid) and
    validation (dashed) on the same axes, for every member in its own colour (dvc plots show draws
    only the reference member's DVCLive curves; the others' are in dvclive/<name>/members/<member>/), from
    the histories in their metadata files."""
    histories = {name: json.loads(meta.read_text())["history"] for name, meta in metas.items()}
    what = "the model" if len(histories) == 1 else f"{len(histories)} members"
    # history keys: each is drawn with its val_ twin
    return learning_curves(histories, path, ("map_at_3", "loss"), title=f"training curves of {what}")


def clear_members(members: Path) -> None:
    """Remove what an earlier run left in models/<name>/members (DVC does, ``python -m stages.train`` not)."""
    if members.is_dir():
        for path in members.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    members.mkdir(parents=True, exist_ok=True)
