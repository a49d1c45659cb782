"""Training: params, devices and distribution strategies, optimizers and schedules.

The callbacks around ``model.fit`` (epoch lines, DVCLive rows, progress, time budget) are in
:mod:`doodle.train.callbacks`.

Resumption lives in :mod:`doodle.train.resume`: after every epoch the complete state of the run is saved
(weights, optimizer, random seeds, best score, early-stopping and learning-rate counters), so a killed
run restarted with the same params ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import keras

from doodle.core.params import ParamError, require
from doodle.drawing.augment import StrokeAugmentParams
from doodle.models import AugmentParams

#: ``train.strategy``: how training is spread over devices and machines (see :func:`device_strategy`).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


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
    time_budget_s: int | None = None  # wall-clock seconds of model.fit; stops at an epoch end (null = none)
    mixed_precision: bool = True  # float16/bfloat16 compute, on GPUs only
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker | tpu (see device_strategy)
    seed: int = 0
    shuffle_block_rows: int = 512
    shuffle_buffer_blocks: int = 64
    stroke_buffer_groups: int = 4  # on-the-fly input: shuffle buffer in parquet row groups
    render_threads: int | None = None  # on-the-fly input: threads drawing each batch (None = one per core)
    stroke_augment: dict = field(default_factory=lambda: asdict(StrokeAugmentParams()))
    bn_recalibration_batches: int = 20  # recompute BatchNorm statistics each epoch (doodle.train.batchnorm); 0 = off
    augment: dict = field(default_factory=lambda: asdict(AugmentParams()))
    folds: int = 1  # K-fold cross-validation over the shards (doodle.train.folds); 1 = the shard.val_shards holdout
    seeds: int = 1  # models per fold, seeded train.seed, train.seed + 1, ...; folds x seeds = the ensemble

    def validate(self, where: str = "train") -> None:
        from doodle.core.params import from_mapping
        from doodle.models import ARCHITECTURES

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
        require(
            self.strategy in STRATEGIES,
            f"{where}.strategy",
            f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}",
        )
        require(self.batch_size >= 1 and self.epochs >= 1, where, "batch_size and epochs must be >= 1")
        require(self.learning_rate > 0, f"{where}.learning_rate", "must be > 0")
        require(0 <= self.label_smoothing < 1, f"{where}.label_smoothing", "must be in [0, 1)")
        require(self.width > 0, f"{where}.width", "must be > 0")
        require(self.time_budget_s is None or self.time_budget_s > 0, f"{where}.time_budget_s", "must be > 0 or null")
        require(self.folds >= 1, f"{where}.folds", "must be >= 1 (1 = the shard.val_shards holdout)")
        require(self.seeds >= 1, f"{where}.seeds", "must be >= 1 (models trained per fold)")
        require(self.bn_recalibration_batches >= 0, f"{where}.bn_recalibration_batches", "must be >= 0")
        self.augment_params = from_mapping(AugmentParams, self.augment, f"{where}.augment")
        require(self.stroke_buffer_groups >= 1, f"{where}.stroke_buffer_groups", "must be >= 1")
        require(self.render_threads is None or self.render_threads >= 1, f"{where}.render_threads", "must be >= 1")
        self.stroke_augment_params = from_mapping(StrokeAugmentParams, self.stroke_augment, f"{where}.stroke_augment")

    def fingerprint(self, extra: dict) -> str:
        blob = json.dumps({"train": asdict(self), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Worker:
    """This process's place in a training: worker ``index`` of ``count`` (1 unless ``multi_worker``).

    Worker 0 is the chief: the TF_CONFIG task of type ``chief``, or ``worker`` 0 when the cluster
    has no ``chief``. It alone writes the model, its metadata, the metrics, the DVCLive files and
    the resume backup; the index also picks the worker's share of the training batches.
    """

    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0


TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


def cluster_worker(strategy: str = "auto", environ=None) -> Worker:
    """The :class:`Worker` this process is: read (and checked) from ``TF_CONFIG`` for ``multi_worker``.

    Raises a one-line :class:`~doodle.core.params.ParamError` naming TF_CONFIG when it is missing or
    malformed, before TensorFlow starts anything (a bad cluster would otherwise hang or fail deep
    inside the runtime).
    """
    if strategy != "multi_worker":
        return Worker()
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")

    def bad(what: str) -> ParamError:
        return ParamError(
            f"param train.strategy: multi_worker needs the TF_CONFIG environment variable on every worker, e.g. "
            f"TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index 0 on the chief, 1, 2, ... on the others); {what}"
        )

    if not raw.strip():
        raise bad("TF_CONFIG is not set")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise bad(f"TF_CONFIG is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise bad('TF_CONFIG has no "cluster" mapping')
    cluster, task = config["cluster"], config.get("task")
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise bad(f"TF_CONFIG's cluster has job(s) {unknown}: only chief and worker take part")
    for job, hosts in cluster.items():
        if not (isinstance(hosts, list) and all(isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts)):
            raise bad(f'TF_CONFIG\'s cluster "{job}" must be a list of "host:port" strings, got {hosts!r}')
    chiefs, workers = cluster.get("chief", []), cluster.get("worker", [])
    if len(chiefs) > 1 or not chiefs + workers:
        raise bad("TF_CONFIG's cluster needs at most one chief and at least one worker address")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise bad(f'TF_CONFIG\'s "task" must have a "type" among {sorted(cluster)}, got {task!r}')
    index = task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task["type"]]):
        raise bad(f"TF_CONFIG's task index {index!r} is not a position in the cluster's {task['type']!r} list")
    return Worker(index=index + len(chiefs) if task["type"] == "worker" else 0, count=len(chiefs) + len(workers))


def device_strategy(mixed_precision: bool, strategy: str = "auto"):
    """(strategy, description) for ``train.strategy``; the description goes into models/model.json.

    - ``auto``: TPUStrategy when a TPU is found (TPUClusterResolver), MirroredStrategy over every
      visible GPU, else the default strategy (one device).
    - ``one_device``: OneDeviceStrategy on the first GPU, or on the CPU.
    - ``mirrored``: MirroredStrategy over the visible GPUs (the CPU when there are none).
    - ``multi_worker``: MultiWorkerMirroredStrategy over the machines of ``TF_CONFIG`` (see
      :func:`cluster_worker`), each mirroring over its own GPUs (or its CPU).
    - ``tpu``: TPUStrategy; a ParamError when no TPU is found.

    ``mixed_precision`` sets the global Keras policy on GPUs (bfloat16 from compute capability 8,
    float16 before) and TPUs (bfloat16); the CPU stays float32. Call this before TensorFlow runs
    anything: multi-worker collectives are configured when the runtime starts.

    TensorFlow-only: with another Keras backend only ``auto`` is accepted (the default device).
    """
    if strategy not in STRATEGIES:
        raise ParamError(f"param train.strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if keras.backend.backend() != "tensorflow":
        if strategy != "auto":
            raise ParamError(f"param train.strategy: {strategy} needs the tensorflow Keras backend")
        return None, f"{keras.backend.backend()} backend, default device"
    import tensorflow as tf

    if strategy == "tpu" or (strategy == "auto" and _tpu_hint()):
        resolver = _tpu_resolver()
        if resolver is not None:
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            tpu = tf.distribute.TPUStrategy(resolver)
            policy = _set_policy("mixed_bfloat16" if mixed_precision else "float32")
            return tpu, f"TPU, TPUStrategy ({tpu.num_replicas_in_sync} replicas), {policy}"
        if strategy == "tpu":
            raise ParamError("param train.strategy: tpu, but no TPU was found (TPUClusterResolver); use auto")

    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        tf.config.experimental.set_memory_growth(g, True)
    policy = _set_policy(_gpu_policy(tf, gpus) if gpus and mixed_precision else "float32")
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    if strategy == "multi_worker":
        workers = cluster_worker(strategy).count  # checked first: a clear error, not a hang
        multi = _keras_multi_worker_strategy(tf)
        replicas = multi.num_replicas_in_sync
        return multi, f"{workers} workers x {where}, MultiWorkerMirroredStrategy ({replicas} replicas), {policy}"
    if strategy == "one_device":
        device = "/gpu:0" if gpus else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device), f"{'GPU:0' if gpus else 'CPU'}, OneDeviceStrategy, {policy}"
    if strategy == "mirrored" or gpus:
        mirrored = tf.distribute.MirroredStrategy()
        if gpus:
            return mirrored, f"{where}, MirroredStrategy, {policy}"  # the same words as before train.strategy
        return mirrored, f"CPU, MirroredStrategy ({mirrored.num_replicas_in_sync} replica), {policy}"
    return tf.distribute.get_strategy(), f"CPU, default strategy, {policy}"


def _keras_multi_worker_strategy(tf):
    """A MultiWorkerMirroredStrategy (cluster from TF_CONFIG) that Keras 3's ``fit`` can use.

    Keras 3 (3.15 here) calls ``strategy.reduce`` with what MirroredStrategy accepts and this strategy
    does not (keras-team/keras#20585, tensorflow/tensorflow#72388): the first ``(x, y)`` batch as
    one structure (to build the model, uint8 images included, which collectives do not carry),
    and rank-0 metric values with ``axis=0``. This subclass reduces a structure leaf by leaf, a
    scalar without an axis, and a dtype collectives lack through float32; the rest is the parent's.
    """
    collective = (tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32, tf.int64)

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def leaf(v):
                first = self.experimental_local_results(v)[0]
                rank = getattr(getattr(first, "shape", None), "rank", None)
                axis_ = None if rank == 0 else axis
                if getattr(first, "dtype", tf.float32) in collective:
                    return parent.reduce(reduce_op, v, axis_)
                return tf.cast(parent.reduce(reduce_op, self._widen(v), axis_), first.dtype)

            return tf.nest.map_structure(leaf, value)

        @tf.function(reduce_retracing=True)  # strategy.run in a function: no "eagerly" warning per call
        def _widen(self, v):
            return self.run(lambda t: tf.cast(t, tf.float32), args=(v,))

    return KerasMultiWorkerMirroredStrategy()


def _gpu_policy(tf, gpus) -> str:
    major = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))[0]
    return "mixed_bfloat16" if major >= 8 else "mixed_float16"


def _set_policy(policy: str) -> str:
    if policy != "float32":
        keras.mixed_precision.set_global_policy(policy)
    return policy


def _tpu_hint() -> bool:
    """Whether ``auto`` should look for a TPU: a Cloud TPU name in the environment, or a TPU VM's
    local accelerator devices. Without a hint no resolver runs (it may query cloud metadata)."""
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")) or os.path.exists("/dev/accel0")


def _tpu_resolver():
    """A TPUClusterResolver (Cloud TPU by name, else a TPU VM's local chips), or None when none is found."""
    import tensorflow as tf

    for tpu in (None, "local"):
        if tpu == "local" and not os.path.exists("/dev/accel0"):
            break
        try:
            return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        except (ValueError, RuntimeError):
            continue
    return None


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
