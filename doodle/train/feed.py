"""What the train stage feeds ``model.fit``: the training stream (the render cache's images, or
batches drawn on the fly from the stroke shards) and the tf.data dataset Keras reads it through,
split over replicas and workers."""

from __future__ import annotations

from pathlib import Path

from doodle.batches.batching import tf_dataset
from doodle.batches.cache import CacheParams, CacheSplit, open_split
from doodle.batches.stream import BatchStream
from doodle.batches.strokes import DrawnSplit, StrokeStream, shard_paths
from doodle.core.paths import CACHE, SHARDS
from doodle.shard.format import read_manifest

from .params import TrainParams
from .strategy import Worker


def fit_data(strategy, worker: Worker, stream, start_epoch: int = 0):
    """What ``model.fit`` reads ``stream`` from: a tf.data.Dataset, which Keras splits over the
    replicas of this machine; with several workers, each worker's own dataset, of this worker's
    batches (``stream`` yields only those), split over its replicas and neither sharded again by
    tf.data (a Python generator cannot be sharded by file) nor re-batched across workers.

    Repeated, for validation too (``validation_steps`` ends each pass, and every epoch starts a new
    iterator at the first batch): under a distribution strategy Keras 3 peeks at a batch of the
    previous epoch's validation iterator before it starts the next one, which must not be exhausted.
    """
    if worker.count == 1:
        return tf_dataset(stream, repeat=True, start_epoch=start_epoch)
    per_replica = stream.batch_size * worker.count // strategy.num_replicas_in_sync

    def dataset(context):
        if context.num_input_pipelines != worker.count:
            raise RuntimeError(f"{context.num_input_pipelines} input pipelines for {worker.count} TF_CONFIG workers")
        ds = tf_dataset(stream, repeat=True, start_epoch=start_epoch)
        return ds.rebatch(per_replica) if per_replica < stream.batch_size else ds  # one piece per local replica

    return strategy.distribute_datasets_from_function(dataset)


def training_stream(
    cfg: TrainParams,
    render_cfg: CacheParams,
    batch: int,
    worker: Worker | None = None,
    cache_dir: Path = CACHE,
    shards_dir: Path = SHARDS,
    split: CacheSplit | list[Path] | None = None,
):
    """(stream, what it reads): the render cache's training images, or with
    ``render.train_cache: false`` batches drawn on the fly from the training shards, with the
    same render params as the cache (so the same images without stroke augmentation).
    ``batch`` is this worker's batch; the stream yields this worker's share of the steps.
    ``split``: what to train on instead of the ``train`` split, a cross-validation fold's
    training shards (doodle.train.folds): their cache images, or with ``render.train_cache: false``
    their parquet files, drawn on the fly."""
    worker = worker or Worker()
    if isinstance(split, CacheSplit) or (render_cfg.train_cache and split is None):
        stream = BatchStream(
            split if isinstance(split, CacheSplit) else open_split(cache_dir, "train"),
            batch,
            shuffle=True,
            seed=cfg.seed,
            steps=cfg.steps_per_epoch,
            block_rows=cfg.shuffle_block_rows,
            buffer_blocks=cfg.shuffle_buffer_blocks,
            workers=worker.count,
            worker=worker.index,
        )
        return stream, "cache"
    shards = read_manifest(shards_dir)
    raster = render_cfg.raster()  # checked against the cache's before any work (ensemble.check_run)
    stream = StrokeStream(
        split if split is not None else shard_paths(shards_dir, "train", render_cfg.train_shards),
        raster,
        batch,
        shuffle=True,
        seed=cfg.seed,
        steps=cfg.steps_per_epoch,
        buffer_groups=cfg.stroke_buffer_groups,
        augment=cfg.stroke_augment_params,
        max_per_shard=render_cfg.max_per_shard,
        threads=cfg.render_threads,
        workers=worker.count,
        worker=worker.index,
    )
    source = {"shards": shards, "train_shards": render_cfg.train_shards}
    return stream, {**source, "max_per_shard": render_cfg.max_per_shard}


def validation_stream(split: CacheSplit | DrawnSplit, batch: int, steps: int | None = None):
    """The ordered validation batches ``model.fit`` scores each epoch: ``steps`` of them, or all of
    ``split`` (cache images, or a fold's held-out shards drawn on the fly)."""
    if isinstance(split, DrawnSplit):
        return split.stream(batch, steps=steps)
    return BatchStream(split, batch, shuffle=False, steps=steps)
