"""train.strategy: which tf.distribute strategy each value gives, TF_CONFIG checks, how workers share
the training batches, and real two-worker runs of the train stage: MultiWorkerMirroredStrategy, and
Keras on JAX over two processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from doodle.core.params import ParamError, load_section
from doodle.train.params import TrainParams
from doodle.train.strategy import Worker, cluster_worker, device_strategy
from tests.conftest import subprocess_env, write_params

CLUSTER = {"worker": ["localhost:20001", "localhost:20002"]}


# -- choosing the strategy ----------------------------------------------------------------------------


def test_auto_one_device_and_mirrored_on_this_machine():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    strategy, device = device_strategy(False, "auto")
    if gpus:
        assert isinstance(strategy, tf.distribute.MirroredStrategy) and "MirroredStrategy" in device
    else:  # no GPU, no TPU: the default (single device) strategy, as before train.strategy existed
        assert strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()
        assert device == "CPU, default strategy, float32"

    strategy, device = device_strategy(False, "one_device")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy) and "OneDeviceStrategy" in device
    assert strategy.extended.worker_devices[0].endswith("GPU:0" if gpus else "CPU:0")

    strategy, device = device_strategy(False, "mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy) and "MirroredStrategy" in device
    assert strategy.num_replicas_in_sync == max(1, len(gpus))


def test_a_bad_strategy_is_named():
    with pytest.raises(ParamError, match=r"train\.strategy.*'horovod'.*auto, one_device, mirrored, multi_worker, tpu"):
        load_section(TrainParams, "train", {"train": {"strategy": "horovod"}})
    with pytest.raises(ParamError, match=r"train\.strategy.*'horovod'"):
        device_strategy(False, "horovod")
    assert load_section(TrainParams, "train", {"train": {"strategy": "multi_worker"}}).strategy == "multi_worker"


@pytest.mark.parametrize(
    "tf_config, why",
    [
        (None, "TF_CONFIG is not set"),
        ("{'cluster': 1", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), 'no "cluster"'),
        (json.dumps({"cluster": CLUSTER}), '"task"'),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}}), "index 2"),
        (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
        (json.dumps({"cluster": {**CLUSTER, "ps": ["h:1"]}, "task": {"type": "worker", "index": 0}}), "ps"),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(tf_config, why):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ParamError) as err:
        cluster_worker("multi_worker", environ)
    message = str(err.value)
    assert message.startswith("param train.strategy: multi_worker needs the TF_CONFIG environment variable")
    assert why in message and "\n" not in message  # one line


def test_workers_and_the_chief_from_tf_config():
    def worker(cluster, task_type, index):
        return cluster_worker(
            "multi_worker", {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}
        )

    assert cluster_worker("auto", {}) == Worker(0, 1)  # TF_CONFIG is read for multi_worker only
    assert worker(CLUSTER, "worker", 0) == Worker(0, 2) and Worker(0, 2).chief
    assert worker(CLUSTER, "worker", 1) == Worker(1, 2) and not Worker(1, 2).chief
    with_chief = {"chief": ["localhost:20000"], **CLUSTER}
    assert worker(with_chief, "chief", 0) == Worker(0, 3)
    assert worker(with_chief, "worker", 0) == Worker(1, 3)  # with a chief, worker 0 is not the chief


def test_the_stage_without_tf_config_stops_with_one_line(project, monkeypatch):
    write_params(project / "params.yaml", {"train": {"strategy": "multi_worker"}})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    from stages import train

    with pytest.raises(ParamError, match="TF_CONFIG is not set"):
        train.main(["--quiet"])  # before anything is read or started


# -- the workers' share of the batches ------------------------------------------------------------------


def _steps(streams, epoch):
    """Per step, the batches of every stream joined (worker 0's rows first)."""
    for parts in zip(*(s.epoch(epoch) for s in streams)):
        yield np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _assert_same_batches(single, workers, epochs=(0, 1)):
    assert all(len(w) == len(single) for w in workers)
    for epoch in epochs:
        got, want = list(_steps(workers, epoch)), list(_steps([single], epoch))
        assert len(got) == len(want) == len(single)
        for (x, y), (x1, y1) in zip(got, want):
            assert np.array_equal(x, x1) and np.array_equal(y, y1)
    # own=False: every worker sees every batch of the stream, the same on each (BatchNorm recalibration)
    every = [list(w.epoch(0, own=False)) for w in workers]
    assert len(every[0]) == len(single) * len(workers)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(every[0], every[1]))


def test_two_workers_read_the_batches_of_one_process_with_the_global_batch(rendered):
    """Worker w takes batches w, w + 2, ...: the two halves of each step are, row for row, the batch
    that one process with twice the batch reads; a full pass (steps None) counts global batches."""
    from doodle.batches.cache import open_split
    from doodle.batches.stream import BatchStream

    split = open_split(rendered / "data/cache", "train")
    kw = dict(shuffle=True, seed=3, block_rows=8, buffer_blocks=3)
    for steps in (7, None):  # 7 x 22 rows: more than one pass (157 rows), buffers cut mid-batch
        single = BatchStream(split, 22, steps=steps, **kw)
        workers = [BatchStream(split, 11, steps=steps, workers=2, worker=w, **kw) for w in (0, 1)]
        _assert_same_batches(single, workers)
    assert len(single) == -(-split.rows // 22)
    with pytest.raises(ValueError, match="worker"):
        BatchStream(split, 11, workers=2, worker=2, **kw)


def test_two_workers_draw_the_images_of_one_process_on_the_fly(rendered):
    """On the fly: each worker renders only its own batches. Without augmentation they are the
    global batch's images; with it, the augmentation numbers of the other worker's batches are
    drawn too, so each image is the one a single process with the per-worker batch draws."""
    from doodle.batches.strokes import StrokeStream, shard_paths
    from doodle.drawing.augment import StrokeAugmentParams
    from doodle.drawing.raster import RenderParams

    shards = shard_paths(rendered / "data/shards", "train")
    kw = dict(shuffle=True, seed=5, steps=5, buffer_groups=1, threads=2)
    single = StrokeStream(shards, RenderParams(32), 26, **kw)
    workers = [StrokeStream(shards, RenderParams(32), 13, workers=2, worker=w, **kw) for w in (0, 1)]
    _assert_same_batches(single, workers)

    augment = StrokeAugmentParams(scale=0.2, aspect=0.2, shift=0.1, rotation=20, shear=0.2, stroke_dropout=0.2)
    kw = {**kw, "augment": augment}
    single = StrokeStream(shards, RenderParams(32), 13, **{**kw, "steps": 10})  # the per-worker batch
    workers = [StrokeStream(shards, RenderParams(32), 13, workers=2, worker=w, **kw) for w in (0, 1)]
    for epoch in (0, 1):
        want = list(single.epoch(epoch))
        for w, stream in enumerate(workers):
            got = list(stream.epoch(epoch))
            assert len(got) == 5 and all(np.array_equal(a[0], b[0]) for a, b in zip(got, want[w::2]))
    # (not those of a single process with the global batch: a transform is drawn per batch)
    first = next(iter(StrokeStream(shards, RenderParams(32), 26, **kw).epoch(1)))[0]
    assert not np.array_equal(first[:13], want[0][0])


# -- a real two-worker run ------------------------------------------------------------------------------


def _held_ports(n: int) -> list[socket.socket]:
    """``n`` sockets bound to ports the OS chose, held (bound, never listening) until the test ends,
    so nothing else can take a port between its choice and the worker's bind. They set SO_REUSEPORT
    (and SO_REUSEADDR), as gRPC's server does on Linux, so TensorFlow's server binds the port beside
    ours; a bound socket that does not listen is never handed a connection. (Checked: TensorFlow's
    server starts on a port held so, and accepts connections; a port held without SO_REUSEPORT
    makes it fail with "Could not start gRPC server".)"""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.socket())
            socks[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            socks[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            socks[-1].bind(("localhost", 0))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _wait_all(procs, timeout: float) -> list[int | None]:
    """Exit codes of ``procs``; once one fails (the others would wait for it) or time is up, None for the rest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
            return codes
        time.sleep(0.5)
    return [p.poll() for p in procs]


# One process, two replicas (two logical CPUs) with the same global batch: what the two workers must equal.
MIRRORED_ON_TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from doodle.train import strategy as training
from stages import cli, train
# the train stage imports it when it runs (after parsing its arguments), so patched here
training.device_strategy = lambda *a: (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), "2 CPUs, MirroredStrategy")
cli.run(lambda: train.main(["--quiet"]))
"""


def _run_cluster(rendered, tmp_path, runs: dict) -> dict[str, str]:
    """Run each of ``runs`` (name: (params.yaml overrides, python arguments, environment)) in its own copy of
    ``rendered`` under ``tmp_path/<name>``, all at once, as on separate machines; ``worker0`` and
    ``worker1`` get the TF_CONFIG of a cluster of two held localhost ports. Each has its own TMPDIR
    (``tmp_path/tmp-<name>``). Returns every run's output once all succeeded."""
    held = _held_ports(2)  # closed only once every run is done (finally below)
    cluster = {"worker": [f"localhost:{sock.getsockname()[1]}" for sock in held]}
    procs, logs = [], []
    try:
        for name, (params, args, env) in runs.items():
            proj = tmp_path / name
            shutil.copytree(rendered, proj)
            write_params(proj / "params.yaml", params)
            if name == "worker0":  # a backup of a killed run: multi-worker runs start over instead of resuming
                (proj / "models/backup/main/epoch-0001").mkdir(parents=True)
            run_env = {**subprocess_env(), **env, "TMPDIR": str(tmp_path / f"tmp-{name}")}
            os.mkdir(run_env["TMPDIR"])
            if name.startswith("worker"):
                task = {"type": "worker", "index": int(name.removeprefix("worker"))}
                run_env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
            logs.append((tmp_path / f"{name}.log").open("w"))
            cmd = [sys.executable, "-u", *args]
            procs.append(subprocess.Popen(cmd, cwd=proj, env=run_env, stdout=logs[-1], stderr=subprocess.STDOUT))
        codes = _wait_all(procs, timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        for sock in held:
            sock.close()
    out = {name: (tmp_path / f"{name}.log").read_text() for name in runs}
    assert codes == [0] * len(runs), "\n\n".join(f"{name}:\n{text}" for name, text in out.items())
    return out


def _assert_only_the_chief_wrote(tmp_path, out: dict, device: str) -> dict:
    """The chief (worker0) wrote the model, its figures and DVCLive files; worker1 wrote nothing into
    its project and removed its scratch directory. Returns the chief's model metadata."""
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    import keras

    model = keras.saving.load_model(chief / "models/main/model.keras", compile=False)  # as predict loads it
    meta = json.loads((chief / "models/main/model.json").read_text())
    assert model.output_shape == (None, 4) and len(meta["history"]["loss"]) == 2
    assert meta["device"] == device
    assert (chief / "metrics/train/main.json").is_file() and (chief / "dvclive/main/metrics.json").is_file()
    assert not (chief / "models/backup").exists() and "multi-worker runs do not resume" in out["worker0"]
    assert "batch 32 (16 on each of 2 workers) x 2 steps" in out["worker0"]
    assert "this is worker 0 (the chief)" in out["worker0"]

    assert not (other / "models").exists(), "the non-chief wrote into its project's models/"
    assert not (other / "metrics/train/main.json").exists() and not (other / "dvclive").exists()
    assert list((tmp_path / "tmp-worker1").iterdir()) == []  # its scratch directory is gone
    assert "this is worker 1\n" in out["worker1"] and "train: worker 1 of 2 done" in out["worker1"]
    return meta


def _assert_same_history(meta: dict, reference: dict) -> None:
    want = reference["history"]
    assert meta["history"].keys() == want.keys()
    for key, values in want.items():
        np.testing.assert_allclose(meta["history"][key], values, rtol=1e-5, err_msg=key)


# One process, two replicas (two logical CPUs) with the same global batch: what the two workers must equal.
MIRRORED_ON_TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from doodle.train import strategy as training
from stages import cli, train
# the train stage imports it when it runs (after parsing its arguments), so patched here
training.device_strategy = lambda *a: (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), "2 CPUs, MirroredStrategy")
cli.run(lambda: train.main(["--quiet"]))
"""


@pytest.mark.slow
def test_two_local_workers_train_one_model_and_only_the_chief_writes_it(rendered, tmp_path):
    """Two CPU processes of `python -m stages.train` with TF_CONFIG (MultiWorkerMirroredStrategy),
    each in its own copy of the project, as on two machines. Both finish; only the chief (worker
    0) writes models/, metrics/train/main.json and dvclive/; worker 1 saves into a scratch directory
    (every worker must take part in the saves' collective reads), which it deletes at the end.
    The run equals one process training the same global batch on two replicas, epoch for epoch.
    Two epochs, so the validation iterator is started again (a Keras 3 pitfall under a strategy)."""
    train = {"batch_size": 16, "steps_per_epoch": 2, "epochs": 2}  # per replica: a global batch of 32
    worker = ({"train": {**train, "strategy": "multi_worker"}}, ["-m", "stages.train", "--quiet"], {})
    runs = {"worker0": worker, "worker1": worker, "reference": ({"train": train}, ["-c", MIRRORED_ON_TWO_CPUS], {})}
    out = _run_cluster(rendered, tmp_path, runs)
    meta = _assert_only_the_chief_wrote(
        tmp_path, out, "2 workers x CPU, MultiWorkerMirroredStrategy (2 replicas), float32"
    )
    # the same global batches, dropout streams and averaged gradients as one process with two replicas
    assert "batch 32 x 2 steps" in out["reference"]
    _assert_same_history(meta, json.loads((tmp_path / "reference/models/main/model.json").read_text()))


# Under JAX: one process, keras.distribution.DataParallel over two CPU devices, the same global batch.
DATA_PARALLEL_ON_TWO_CPUS = """
import keras
from doodle.train import strategy as training
from stages import cli, train

def two_cpus(*args):
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu"))
    keras.distribution.set_distribution(distribution)
    return training.KerasDistribution(2, 2, distribution), "2 CPUs, DataParallel"

training.device_strategy = two_cpus
cli.run(lambda: train.main(["--quiet"]))
"""


@pytest.mark.slow
def test_two_local_jax_processes_train_one_model_and_only_the_chief_writes_it(rendered, tmp_path):
    """The same under KERAS_BACKEND=jax: two processes join one JAX runtime (the chief's TF_CONFIG
    address is the coordinator's), each feeds its share of every global batch, and Keras's
    DataParallel spans both. Drawn on the fly, each worker making its share in 2 input processes of
    its own (train.input_processes). A BatchNorm model (MobileNet), so each epoch's recalibration
    runs on global batches split over both processes. Only the chief writes; the history, and the
    chief's final scoring of the best model on the whole validation split (done alone, the other
    process waiting at a barrier), equal one process with two devices and the same global batch."""
    pytest.importorskip("jax")
    train = {"model": "mobilenet", "batch_size": 16, "steps_per_epoch": 2, "epochs": 2, "val_rows": 64}
    jax = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    two_devices = {**jax, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    on_the_fly = {"train_cache": False}
    multi = {"render": on_the_fly, "train": {**train, "strategy": "multi_worker", "input_processes": 2}}
    worker = (multi, ["-m", "stages.train", "--quiet"], jax)
    reference = ({"render": on_the_fly, "train": train}, ["-c", DATA_PARALLEL_ON_TWO_CPUS], two_devices)
    runs = {"worker0": worker, "worker1": worker, "reference": reference}
    out = _run_cluster(rendered, tmp_path, runs)
    meta = _assert_only_the_chief_wrote(
        tmp_path, out, "2 workers x CPU, jax backend, keras.distribution.DataParallel (2 devices), float32"
    )
    reference = json.loads((tmp_path / "reference/models/main/model.json").read_text())
    assert "157 train drawings (drawn on the fly in 2 processes) / 71 val images" in out["worker0"]
    _assert_same_history(meta, reference)
    for key in ("val_map_at_3", "val_loss", "val_rows"):
        assert meta["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-5), key


def test_jax_takes_auto_or_multi_worker_only(monkeypatch):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(
        ParamError, match="train.strategy: mirrored needs the tensorflow Keras backend; jax takes auto or multi_worker"
    ):
        device_strategy(False, "mirrored")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ParamError, match="TF_CONFIG is not set"):  # before JAX's runtime starts
        device_strategy(False, "multi_worker")
    pytest.importorskip("jax")
    from doodle.train import strategy

    monkeypatch.setattr(strategy, "join_cluster", lambda: 2)  # as if a second machine had joined with none
    with pytest.raises(ParamError, match="same number of devices on every machine; this one has 1 of the cluster's 1"):
        device_strategy(False, "multi_worker")


def test_a_backend_never_run_here_is_refused_in_one_line(monkeypatch):
    import keras

    from doodle.core.errors import UserError
    from doodle.train.strategy import device_strategy

    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(UserError, match="KERAS_BACKEND=torch: the pipeline trains under tensorflow or jax"):
        device_strategy(mixed_precision=False)
