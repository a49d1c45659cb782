"""What the train stage feeds ``model.fit``: the training stream (the render cache's images, or
batches drawn on the fly from the stroke shards) and what Keras reads it through: a tf.data dataset
split over replicas and workers under the TensorFlow backend, the numpy batches themselves under
JAX (a ``keras.utils.PyDataset``: :class:`StreamBatches`; ``keras.distribution`` splits each
batch over the devices)."""

from __future__ import annotations

from pathlib import Path

import keras

from doodle.batches.batching import ReadAhead, tf_dataset
from doodle.batches.cache import CacheSplit, open_split
from doodle.batches.processes import ProcessStream
from doodle.batches.stream import BatchStream
from doodle.batches.strokes import DrawnSplit, StrokeStream, shard_paths
from doodle.drawing.sequence import encoder_spec
from doodle.render.params import RenderSection
from doodle.shard.format import read_manifest

from .params import TrainParams, trains_on_cache
from .strategy import Worker

#: Batches made ahead of the training loop on a thread of their own without tf.data (JAX): 0,
#: they are made in the training loop's thread. A thread does not pay: making a batch takes Python's
#: lock many times (gathering, numpy, the pool's hand-offs), and beside a training loop that keeps the
#: lock busy (Keras' step dispatch) it starves. Measured: on one H200 a thread 4 batches ahead gave
#: `ours` 103,044 -> 93,590 images/s; on 2 CPU cores the stream made 179,427 images/s alone and 2,830
#: beside a Python loop. ``StreamBatches(read_ahead=N)`` and ``benchmarks/gpu.sh --read-ahead`` keep
#: the A/B; docs/performance.md "Where the full path's time goes".
READ_AHEAD = 0


def fit_data(strategy, worker: Worker, stream, start_epoch: int = 0):
    """What ``model.fit`` reads ``stream`` from: a tf.data.Dataset, which Keras splits over the
    replicas of this machine; with several workers, each worker's own dataset, of this worker's
    batches (``stream`` yields only those), split over its replicas and neither sharded again by
    tf.data (a Python generator cannot be sharded by file) nor re-batched across workers.

    Repeated, for validation too (``validation_steps`` ends each pass, and every epoch starts a new
    iterator at the first batch): under a distribution strategy Keras 3 peeks at a batch of the
    previous epoch's validation iterator before it starts the next one, which must not be exhausted.

    Under JAX, the stream as a :class:`StreamBatches` (a ``keras.utils.PyDataset``), of this
    process's batches too: Keras puts the processes' batches of a step together into the global one
    (``keras.distribution``). A validation stream is the same on every worker, so each feeds the same
    rows: the global batch holds each row once per worker, which leaves every mean (loss, MAP@3) as
    one process computes it.
    """
    if not uses_tf_data():
        return StreamBatches(stream, start_epoch, local_replicas(strategy))
    if worker.count == 1:
        return tf_dataset(stream, repeat=True, start_epoch=start_epoch)
    per_replica = stream.batch_size * worker.count // strategy.num_replicas_in_sync

    def dataset(context):
        if context.num_input_pipelines != worker.count:
            raise RuntimeError(f"{context.num_input_pipelines} input pipelines for {worker.count} TF_CONFIG workers")
        ds = tf_dataset(stream, repeat=True, start_epoch=start_epoch)
        return ds.rebatch(per_replica) if per_replica < stream.batch_size else ds  # one piece per local replica

    return strategy.distribute_datasets_from_function(dataset)


def uses_tf_data() -> bool:
    """Whether Keras runs on TensorFlow, so reads the streams through tf.data."""
    return keras.backend.backend() == "tensorflow"


def replicas(strategy) -> int:
    """The devices each global batch is split over, on every worker (1 without a strategy)."""
    return strategy.num_replicas_in_sync if strategy is not None else 1


def local_replicas(strategy) -> int:
    """The devices of this process, over which each batch it feeds is split (under JAX: a
    :class:`~doodle.train.strategy.KerasDistribution`'s; 1 without a strategy)."""
    return getattr(strategy, "local_replicas", replicas(strategy))


class StreamBatches(keras.utils.PyDataset):
    """A batch stream as Keras reads it without tf.data (JAX): ``len(stream)`` batches a pass,
    asked for in order, a pass being one epoch of the stream. Each pass is made ``read_ahead``
    batches ahead on a thread of its own (:class:`doodle.batches.batching.ReadAhead`; 0: in the
    training loop's thread), so the next batch is made while the device runs the step Keras
    dispatched (Keras itself asks for batches in order, one at a time: ``workers=1``).

    Pass ``p`` read to its end reads the stream's epoch ``start_epoch + p``: the batches the tf.data
    path gives, a resumed run's included. A pass Keras leaves unfinished (it builds the model on the
    first batch, then starts over) is read again from its start, as the same epoch. A validation
    stream (no shuffle) gives its one ordered pass every time, over again if ``validation_steps`` asks
    for more batches than it holds (as tf.data's repeat does). A Python generator would not do: Keras
    re-reads the two batches it peeks at when it restarts one.

    ``multiple``: the devices Keras splits each batch over (``keras.distribution.DataParallel``),
    which must divide its rows: a validation stream's last, short batch is cut to a multiple of it
    (so training-time validation may leave out up to ``multiple - 1`` drawings; the evaluate stage
    scores them all)."""

    def __init__(self, stream, start_epoch: int = 0, multiple: int = 1, read_ahead: int = READ_AHEAD):
        super().__init__(workers=1, use_multiprocessing=False)
        self.stream = stream
        self.multiple = multiple
        self.read_ahead = read_ahead
        self._epoch = start_epoch - 1  # the epoch of the pass being read
        self._batches, self._at = iter(()), len(stream)  # as if a pass had just been read to its end

    def on_epoch_end(self) -> None:
        """Keras ends a pass (read to its end, cut by a stop, or peeked at before it starts over):
        the thread making it stops; the next pass starts from its first batch either way."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        self._batches = iter(())

    def _pass(self):
        """The current epoch's batches from the start, read ahead unless ``read_ahead`` is 0; the
        pass they replace stops."""
        self.on_epoch_end()
        batches = self.stream.epoch(self._epoch)
        return ReadAhead(batches, self.read_ahead) if self.read_ahead else batches

    def __len__(self) -> int:
        return len(self.stream)

    @property
    def num_batches(self) -> int:
        return len(self.stream)

    def __getitem__(self, index: int):
        if index == 0:
            if self._at >= len(self):  # the last pass was read to its end: the next epoch
                self._epoch += 1
            self._batches, self._at = self._pass(), 0
        if index != self._at:
            raise IndexError(
                f"a stream's batches are read in order (model.fit(..., shuffle=False): the stream shuffles): "
                f"asked for {index}, next is {self._at}"
            )
        self._at += 1
        batch = next(self._batches, None)
        if batch is None:  # more steps than the stream holds (validation): over again
            self._batches = self._pass()
            batch = next(self._batches)
        x, y = batch
        rows = len(y) - len(y) % self.multiple
        return (x, y) if rows == len(y) else (x[:rows], y[:rows])


def training_stream(
    cfg: TrainParams,
    render_cfg: RenderSection,
    batch: int,
    cache_dir: Path,
    shards_dir: Path,
    worker: Worker | None = None,
    split: CacheSplit | list[Path] | None = None,
):
    """(stream, what it reads): the render cache's training images, or with
    ``render.train_cache: false`` batches drawn on the fly from the training shards, with the
    same render params as the cache (so the same images without stroke augmentation); for a stroke
    model, its point sequences encoded on the fly from the training shards.
    ``batch`` is this worker's batch; the stream yields this worker's share of the steps.
    ``split``: what to train on instead of the ``train`` split, a cross-validation fold's
    training shards (doodle.train.folds): their cache images, or with ``render.train_cache: false``
    their parquet files, drawn on the fly."""
    worker = worker or Worker()
    encoder = cfg.encoder(render_cfg)  # render params checked against the cache's (ensemble.check_run)
    if isinstance(split, CacheSplit) or (trains_on_cache(render_cfg, encoder) and split is None):
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
    stream = StrokeStream(
        split if split is not None else shard_paths(shards_dir, "train", render_cfg.train_shards),
        encoder,
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
    if cfg.input_processes:  # the same batches, made in other processes (doodle.batches.processes)
        stream = ProcessStream(stream, cfg.input_processes)
    source = {"shards": shards, "train_shards": render_cfg.train_shards}
    if not render_cfg.draws_as(encoder):  # a stroke model, or an image model drawing otherwise than the cache
        source["input"] = encoder_spec(encoder)
    return stream, {**source, "max_per_shard": render_cfg.max_per_shard}


def validation_stream(split: CacheSplit | DrawnSplit, batch: int, steps: int | None = None):
    """The ordered validation batches ``model.fit`` scores each epoch: ``steps`` of them, or all of
    ``split`` (cache images, or a fold's held-out shards drawn on the fly)."""
    if isinstance(split, DrawnSplit):
        return split.stream(batch, steps=steps)
    return BatchStream(split, batch, shuffle=False, steps=steps)
