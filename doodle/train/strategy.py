"""Where training runs: the ``train.strategy`` values, the tf.distribute strategy each gives
(:func:`device_strategy`), and this process's place among the workers of a multi-worker run
(:func:`cluster_worker`, read from ``TF_CONFIG``).

Under ``KERAS_BACKEND=jax`` (where TensorFlow need not be installed) there is no tf.distribute:
:func:`device_strategy` returns a :class:`KerasDistribution`, data parallel over every GPU through
``keras.distribution``, or the one default device; with ``multi_worker``, over every device of every
process of the ``TF_CONFIG`` cluster (``keras.distribution.initialize``, the chief's address being the
coordinator's). Other Keras backends (torch) are refused: never run here, so not claimed.

Kept apart from the params (doodle.train.params) because it starts the TensorFlow runtime: the
params are read and checked before anything here runs, and a bad ``TF_CONFIG`` is refused before
TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

import keras

from doodle.core.errors import UserError
from doodle.core.params import ParamError

from .params import STRATEGIES


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


@dataclass(frozen=True)
class KerasDistribution:
    """What training on a non-TensorFlow backend needs of a strategy: the replicas a global batch is
    split over (``train.batch_size`` is per replica), those of this process (``local_replicas``: each
    batch this process feeds is split over them) and a scope to build the model in. The split itself is
    the global ``keras.distribution`` (``distribution``, a DataParallel) set by :func:`device_strategy`."""

    num_replicas_in_sync: int = 1
    local_replicas: int = 1
    distribution: object = None  # the keras.distribution set globally, None on one device

    def scope(self):
        return contextlib.nullcontext()

    @property
    def processes(self) -> bool:
        """Whether the replicas span several processes (train.strategy multi_worker)."""
        return self.local_replicas != self.num_replicas_in_sync

    def alone(self):
        """A context in which this process computes by itself, the global distribution unset: for the
        chief's work after ``fit`` (loading the best model, scoring it), while the other processes of a
        multi-process run wait for it (:meth:`barrier`). Nothing changes for one process."""
        return _unset_distribution() if self.processes else contextlib.nullcontext()

    def barrier(self, name: str) -> None:
        """Wait until every process reaches the barrier ``name``: the other workers wait so while the
        chief scores and writes a model by itself (they would otherwise start the next member's
        collectives, or exit, and JAX's runtime ends a process whose peers stay away too long). Nothing
        to wait for on one process."""
        if self.processes:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def global_batch(self, x):
        """This process's rows of a batch as the one array Keras's steps compute on, split over every
        device of every process (each process passes its own rows, as it feeds ``fit``): for BatchNorm
        recalibration, whose statistics are then the global batch's, as a training step's are."""
        import jax

        layout = self.distribution.get_data_layout(x.shape).backend_layout
        return jax.make_array_from_process_local_data(layout, x)


@contextlib.contextmanager
def _unset_distribution():
    was = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(was)


def alone(strategy):
    """``strategy.alone()`` for a :class:`KerasDistribution`; no change for a tf.distribute strategy
    (TensorFlow's chief loads and scores by itself within its strategy)."""
    return strategy.alone() if isinstance(strategy, KerasDistribution) else contextlib.nullcontext()


def barrier(strategy, name: str) -> None:
    """``strategy.barrier(name)`` for a :class:`KerasDistribution`; nothing for a tf.distribute strategy."""
    if isinstance(strategy, KerasDistribution):
        strategy.barrier(name)


def sharded_batches(strategy):
    """How recalibration batches reach the devices: ``strategy.global_batch`` when a
    ``keras.distribution`` splits batches over several devices (each process then reads its own
    rows), else None (every process reads every batch, fed as it is)."""
    if isinstance(strategy, KerasDistribution) and strategy.distribution is not None:
        return strategy.global_batch
    return None


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


def chief_address(environ=None) -> str:
    """The chief's ``host:port`` in ``TF_CONFIG`` (checked by :func:`cluster_worker` first): the JAX
    coordinator's address, which every process connects to and the chief serves."""
    cluster = json.loads((os.environ if environ is None else environ)["TF_CONFIG"])["cluster"]
    return (cluster.get("chief") or cluster["worker"])[0]


def device_strategy(mixed_precision: bool, strategy: str = "auto"):
    """(strategy, description) for ``train.strategy``; the description goes into models/<name>/model.json.

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

    With another Keras backend only ``auto`` is accepted: see :func:`backend_strategy`.
    """
    if strategy not in STRATEGIES:
        raise ParamError(f"param train.strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if keras.backend.backend() != "tensorflow":
        return backend_strategy(mixed_precision, strategy)
    import tensorflow as tf

    if strategy == "tpu" or (strategy == "auto" and _tpu_hint()):
        tpu = _tpu_strategy(tf, mixed_precision)
        if tpu is not None:
            return tpu
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


def backend_strategy(mixed_precision: bool, strategy: str = "auto"):
    """(KerasDistribution, description) under the JAX backend, for ``train.strategy`` auto or multi_worker.

    ``auto``: data parallel over every visible GPU (``keras.distribution.DataParallel``, set globally:
    each batch is split over the devices, the variables replicated) when there are several, else the
    one default device. ``multi_worker``: this process joins the ``TF_CONFIG`` cluster
    (:func:`join_cluster`) and the data parallel runs over every device of every process; each process
    feeds its own share of every global batch. ``mixed_precision`` sets ``mixed_bfloat16`` on GPUs (the
    JAX GPU path runs on chips that have bfloat16); the CPU stays float32. Another backend (torch) is
    one UserError: the project trains and is tested under TensorFlow and JAX only."""
    backend = keras.backend.backend()
    if backend != "jax":
        raise UserError(
            f"KERAS_BACKEND={backend}: the pipeline trains under tensorflow or jax (the {backend} backend is "
            "not tested); unset KERAS_BACKEND or set it to jax"
        )
    if strategy not in ("auto", "multi_worker"):
        raise ParamError(
            f"param train.strategy: {strategy} needs the tensorflow Keras backend; {backend} takes auto or multi_worker"
        )
    workers = join_cluster() if strategy == "multi_worker" else 1
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]  # every process's
    policy = _set_policy("mixed_bfloat16" if gpus and mixed_precision else "float32")
    kind = "gpu" if gpus else "cpu"
    devices = keras.distribution.list_devices(kind)
    local = [d for d in jax.local_devices() if d.platform == kind]
    where = f"{len(local)} GPU(s)" if gpus else "CPU"
    if len(local) * workers != len(devices):  # each feeds batch_size x its devices: the shares must match
        raise ParamError(
            f"param train.strategy: multi_worker under JAX needs the same number of devices on every machine; "
            f"this one has {len(local)} of the cluster's {len(devices)} over {workers} machines"
        )
    if workers > 1:
        how = f"keras.distribution.DataParallel ({len(devices)} devices)"
        description = f"{workers} workers x {where}, {backend} backend, {how}, {policy}"
        return KerasDistribution(len(devices), len(devices) // workers, _data_parallel(devices)), description
    if len(gpus) > 1:
        description = f"{where}, {backend} backend, keras.distribution.DataParallel, {policy}"
        return KerasDistribution(len(gpus), len(gpus), _data_parallel(devices)), description
    return KerasDistribution(1), f"{where}, {backend} backend, default device, {policy}"


def join_cluster(environ=None) -> int:
    """Start JAX's multi-process runtime for this worker of the ``TF_CONFIG`` cluster (the chief's
    address is the coordinator's: the chief serves it, the others connect) and return the number of
    processes. Called before JAX computes anything; it returns once every process has joined.
    On CPUs the processes' collectives go through gloo (JAX has none between CPU processes otherwise)."""
    worker = cluster_worker("multi_worker", environ)  # a bad TF_CONFIG refused before anything starts
    import jax

    with contextlib.suppress(AttributeError):  # JAX 0.10's default already; another version may lack the option
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(chief_address(environ), worker.count, worker.index)
    return worker.count


def _data_parallel(devices: list[str]):
    """DataParallel over ``devices``, set as Keras' global distribution. Each process feeds its own
    rows (the streams give each worker its share), so Keras must not shard a dataset again."""
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return distribution


def _tpu_strategy(tf, mixed_precision: bool):
    """(TPUStrategy, description) on the TPU a resolver finds (bfloat16 with mixed precision), or
    None when there is none."""
    resolver = _tpu_resolver()
    if resolver is None:
        return None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    tpu = tf.distribute.TPUStrategy(resolver)
    policy = _set_policy("mixed_bfloat16" if mixed_precision else "float32")
    return tpu, f"TPU, TPUStrategy ({tpu.num_replicas_in_sync} replicas), {policy}"


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
