"""Benchmark training throughput: the train stage's own path against a plain ``model.fit`` on numpy arrays.

    python -m benchmarks.train_throughput [--steps 8] [--epochs 2] [--workdir /tmp/doodle-bench-train-throughput]
    python -m benchmarks.train_throughput --steps 4 --epochs 1 --configs stage+nocb stage+inter1 plain+intra1 ...

Builds (or reuses, in --workdir) shards and a 64x64x1 render cache of real drawings
(``/work/shared/data/quickdraw-real15``: 15 classes x 400, 8 shards, the last for validation, so
5,231 training images = 41 batches of 128, as the train stage sees them; else the embedded
sample) with the project's own shard and render code. Then, for MobileNet alpha 1.0 at 64 px,
15 classes, batch 128, each configuration runs in a fresh process (what this benchmark found is
per process, and depended on what the process had run before):

- ``stage``: compiled as stages/train.py does (Adam from ``make_optimizer``, its loss, accuracy,
  top-3 and MAP@3), fed by ``tf_dataset(BatchStream(...))`` over the memory-mapped cache, with the
  stage's callbacks (BatchNorm recalibration, ReduceLROnPlateau, EarlyStopping, DVCLive rows,
  TrainingState backups, the epoch line, ChanceWatch) and the validation split after every epoch;
- ``stage+unfixed``: the same without the fix (``doodle.batches.stream.restore_malloc_thresholds``
  made a no-op): how the train stage ran before;
- ``plain``: ``model.fit(x, y, batch_size=128)`` of the same model on the same training images
  held in memory as numpy (Adam, sparse cross-entropy, accuracy), nothing else.

The cause found: ``tf.data.Dataset.from_generator`` (in ``tf_dataset``) makes TensorFlow call
glibc's ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, so every tensor above 128 KiB was mmapped and
unmapped each step and its pages faulted in again (see ``doodle.batches.stream.restore_malloc_thresholds``).

Each runs a warm-up (tracing; for ``stage`` also one validation pass and a short recalibration),
then ``--epochs`` epochs of ``--steps`` steps, timed together. Reported per configuration: the
images/s of the training steps and of the whole timed run, the user and system CPU seconds and
minor page faults of the process over the timed run, its peak RSS, and for ``stage`` the seconds
of each phase (training steps, recalibration, validation, the epoch-end callbacks). A ``stage``
epoch of the real length (41 steps) is projected as 41 x its step time + its per-epoch phases,
against 41 plain steps. CPU seconds a step are the figure to trust on a loaded machine: wall
time there depends on what else runs.

Modifiers, joined with ``+`` (e.g. ``stage+nocb+metrics0``):
  unfixed    TensorFlow's allocator setting left in place (the train stage before the fix)
  nommap     ``mallopt(M_MMAP_MAX, 0)`` at start: the other fix tried (no block is ever mmapped)
  nogen      (stage) the same batches through ``Dataset.range(n).map(numpy_function)``: no GeneratorDataset
             kernel, so TensorFlow never calls mallopt (one live iterator per dataset assumed: a benchmark only)
  inter1/intra1   ``tf.config.threading`` inter-op / intra-op pool of 1 thread
  omp1       OMP_NUM_THREADS=1 in the child's environment
  metrics0   compile without metrics (loss only)
  jit        ``jit_compile=True``;  spe4: ``steps_per_execution=4``
  noopt      tf.data ``experimental_optimization.apply_default_optimizations = False``, autotune off
  pool1      tf.data ``threading.private_threadpool_size = 1``
  prefetch1  prefetch depth 1 instead of AUTOTUNE (the same generator otherwise)
  copy       the cache split read into memory instead of memory-mapped
  nocb       (stage) no callbacks and no validation: the stage's feed and compile only
  recalgraph (stage) BatchNorm recalibration as one traced function instead of eager calls

The load average is printed with each number: this machine is shared, so compare figures measured in
the same run, back to back. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import last_line, source_folder

REAL15 = Path(__file__).resolve().parents[2] / "shared" / "data" / "quickdraw-real15"
DEFAULT_CONFIGS = ["stage+unfixed", "plain", "stage"]
MODIFIERS = {
    "unfixed",
    "nommap",
    "inter1",
    "intra1",
    "omp1",
    "metrics0",
    "jit",
    "spe4",
    "noopt",
    "pool1",
    "prefetch1",
    "copy",
    "nocb",
    "recalgraph",
    "nogen",
}
BATCH = 128
REAL_EPOCH_STEPS = 41  # the train stage's epoch on real15: 5,231 images / 128


def load() -> float:
    return round(os.getloadavg()[0], 2)


def no_mmap_malloc() -> bool:
    """The alternative fix tried: glibc serves every block from its heaps, never from its own mmap
    (TensorFlow's setting of the threshold then no longer matters). About as fast as the fix
    kept, but it also keeps blocks above 32 MiB in the heap after they are freed."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-4, 0))  # M_MMAP_MAX = -4 in malloc.h
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------- the cache
def build(work: Path) -> Path:
    """Shards and a 64x64x1 render cache of real drawings in ``work`` (reused when present)."""
    from doodle.batches.cache import CacheParams, build_cache
    from doodle.shard.run import ShardParams, write_shards
    from doodle.sources.quickdraw import resolve_source

    cache = work / "cache"
    if not (cache / "manifest.json").exists():
        t0 = time.perf_counter()
        source = REAL15 if (REAL15 / "train_simplified").is_dir() else source_folder()
        write_shards(resolve_source(source), work / "shards", ShardParams(count=8, val_shards=[-1]), False)
        build_cache(work / "shards", cache, CacheParams(size=64), progress=False, log=lambda *a: None)
        print(f"built the render cache of {source} in {cache} in {time.perf_counter() - t0:.1f}s")
    return cache


# --------------------------------------------------------------------------- one configuration (child)
class Phases:
    """Wall, user and system CPU seconds and minor faults, accumulated per named phase."""

    def __init__(self):
        self.acc: dict[str, list[float]] = {}
        self.last = None

    @staticmethod
    def now():
        t, r = os.times(), resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), t.user, t.system, r.ru_minflt

    def mark(self, phase: str | None) -> None:
        now = self.now()
        if self.last is not None:
            name, then = self.last
            a = self.acc.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i in range(4):
                a[i] += now[i] - then[i]
        self.last = (phase, now) if phase else None

    def table(self) -> dict:
        return {
            k: {"seconds": round(w, 2), "user_s": round(u, 2), "sys_s": round(s, 2), "minflt": int(f)}
            for k, (w, u, s, f) in self.acc.items()
        }


def child(config: str, cache: Path, run_dir: Path, steps: int, epochs: int, warmup: int) -> dict:
    mods = set(config.split("+")[1:])
    kind = config.split("+")[0]
    no_mmap = no_mmap_malloc() if "nommap" in mods else False
    import itertools

    import keras
    import tensorflow as tf

    import doodle.batches.stream
    from doodle.batches.cache import CacheSplit, open_split
    from doodle.batches.stream import BatchStream, tf_dataset
    from doodle.models import build_model
    from doodle.train.batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers, recalibrate
    from doodle.train.callbacks import EpochLog, LiveLog
    from doodle.train.keras_metrics import MapAt3, SmoothedSparseCrossentropy
    from doodle.train.params import TrainParams, make_optimizer
    from doodle.train.resume import TrainingState, reopen_live

    if "unfixed" in mods:  # how tf_dataset was: TensorFlow's 128 KiB mmap threshold stays
        doodle.batches.stream.restore_malloc_thresholds = lambda: False
    if "inter1" in mods:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if "intra1" in mods:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    split, val_split = open_split(cache, "train"), open_split(cache, "val")
    if "copy" in mods:
        split = CacheSplit([np.array(a) for a in split.images], split.labels, split.keys)
    cfg = TrainParams(model="mobilenet", width=1.0, batch_size=BATCH, epochs=epochs, steps_per_epoch=steps)
    classes = 15
    model = build_model("mobilenet", (64, 64, 1), classes, width=1.0, seed=0)
    compile_kw = {"jit_compile": "jit" in mods, "steps_per_execution": 4 if "spe4" in mods else 1}
    if kind == "stage":
        metrics = (
            [] if "metrics0" in mods else ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(3, name="top3")]
        )
        model.compile(
            optimizer=make_optimizer(cfg, steps),
            loss=SmoothedSparseCrossentropy(cfg.label_smoothing),
            metrics=metrics if "metrics0" in mods else [*metrics, MapAt3()],
            **compile_kw,
        )
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=[] if "metrics0" in mods else ["accuracy"],
            **compile_kw,
        )

    def dataset(stream, repeat):
        if "nogen" in mods:
            state = {}

            def next_batch(i):
                if i == 0:
                    state["it"] = stream.forever() if repeat else stream.epoch(0)
                return next(state["it"])

            shape = (None, *stream.image_shape)
            fetch = lambda i: tf.numpy_function(next_batch, [i], (tf.uint8, tf.int32), stateful=True)  # noqa: E731
            ds = tf.data.Dataset.range(2**62 if repeat else len(stream)).map(fetch)
            ds = ds.map(lambda x, y: (tf.ensure_shape(x, shape), tf.ensure_shape(y, (None,))))
            ds = ds.prefetch(tf.data.AUTOTUNE)
        elif "prefetch1" in mods:

            def gen():  # tf_dataset's generator, fix included
                doodle.batches.stream.restore_malloc_thresholds()
                return stream.forever() if repeat else stream.epoch(0)

            spec = (tf.TensorSpec((None, *stream.image_shape), tf.uint8), tf.TensorSpec((None,), tf.int32))
            ds = tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(1)
        else:
            ds = tf_dataset(stream, repeat=repeat)
        if mods & {"noopt", "pool1"}:
            opts = tf.data.Options()
            if "noopt" in mods:
                opts.experimental_optimization.apply_default_optimizations = False
                opts.autotune.enabled = False
            if "pool1" in mods:
                opts.threading.private_threadpool_size = 1
            ds = ds.with_options(opts)
        return ds

    phases = Phases()
    images = steps * epochs * BATCH
    info = {"config": config, "mallopt_no_mmap": no_mmap, "steps": steps, "epochs": epochs, "batch": BATCH}
    if kind == "plain":
        x = np.concatenate(split.images)
        y = np.concatenate(split.labels).astype(np.int32)
        n = steps * BATCH
        if n > len(x):
            raise SystemExit(f"--steps {steps} needs {n} images; the cache has {len(x)}")
        model.fit(x[: warmup * BATCH], y[: warmup * BATCH], batch_size=BATCH, epochs=1, verbose=0)
        info["load_before"] = load()
        phases.mark("train_steps")
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=epochs, verbose=0)
        phases.mark(None)
    else:
        train = BatchStream(split, BATCH, shuffle=True, seed=0, steps=steps)
        val = BatchStream(val_split, BATCH, shuffle=False)
        # warm-up: trace the train and test functions; one short eager recalibration
        model.fit(dataset(train, True), steps_per_epoch=warmup, epochs=1, verbose=0)
        callbacks, fit_kw = [], {}
        if "nocb" not in mods:
            model.evaluate(dataset(val, False), steps=len(val), verbose=0)
            recalibrate(model, (a for a, _ in itertools.islice(train.epoch(999), 2)))
            shutil.rmtree(run_dir, ignore_errors=True)
            decisions = [
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_map_at_3", mode="max", factor=0.5, patience=2, min_lr=1e-5
                ),
                keras.callbacks.EarlyStopping(monitor="val_map_at_3", mode="max", patience=cfg.early_stopping_patience),
            ]
            state = TrainingState(
                run_dir / "backup", "bench", best_model=run_dir / "model.keras", monitor="val_map_at_3", track=decisions
            )
            live = reopen_live(run_dir / "dvclive", 0, save_dvc_exp=False, dvcyaml=None)

            def batches(e):  # the stage's recalibration stream: its own epochs of training batches
                return (a for a, _ in itertools.islice(train.epoch(1_000_000 + e), cfg.bn_recalibration_batches))

            recal = (_graph_recalibration_class() if "recalgraph" in mods else RecalibrateBatchNorm)(batches, steps)
            callbacks = [
                *decisions,
                LiveLog(live, steps * BATCH),
                state,
                EpochLog(steps * BATCH, epochs, printer=_quiet),
            ]
            callbacks.append(ChanceWatch(classes, printer=_quiet))
            if cfg.bn_recalibration_batches and batchnorm_layers(model):
                callbacks.insert(0, recal)
            callbacks.insert(0, _phase_callback_class()(phases, steps))
            callbacks.append(_phase_callback_class()(phases, steps, last=True))
            fit_kw = {"validation_data": dataset(val, False), "validation_steps": len(val)}
        info["load_before"] = load()
        total = Phases()
        total.mark("all")
        if not callbacks:
            phases.mark("train_steps")
        model.fit(dataset(train, True), steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, verbose=0, **fit_kw)
        phases.mark(None)
        total.mark(None)
        info["total"] = total.table()["all"]
    info["load_after"] = load()
    info["phases"] = phases.table()
    if "total" not in info:
        info["total"] = info["phases"]["train_steps"]
    step = info["phases"]["train_steps"]
    info["train_images_per_s"] = round(images / step["seconds"], 1)
    info["train_cpu_s_per_step"] = round((step["user_s"] + step["sys_s"]) / (steps * epochs), 3)
    info["images_per_s"] = round(images / info["total"]["seconds"], 1)
    per_epoch = sum(v["seconds"] for k, v in info["phases"].items() if k != "train_steps") / epochs
    info["per_epoch_extra_s"] = round(per_epoch, 2)
    info["projected_41_step_epoch_s"] = round(REAL_EPOCH_STEPS * step["seconds"] / (steps * epochs) + per_epoch, 1)
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return info


def _quiet(*args, **kwargs) -> None:
    pass


def _phase_callback_class():
    import keras

    class PhaseCallback(keras.callbacks.Callback):
        """First in the list: splits the timed fit into training steps, recalibration (it runs in
        the last step's ``on_train_batch_end``), validation and the epoch-end callbacks; a second
        one, ``last``, at the end of the list, marks where the epoch-end callbacks are done."""

        def __init__(self, phases: Phases, steps: int, last: bool = False):
            super().__init__()
            self.phases, self.steps, self.last = phases, steps, last

        def on_epoch_begin(self, epoch, logs=None):
            if not self.last:
                self.phases.mark("train_steps")

        def on_train_batch_end(self, batch, logs=None):
            if batch >= self.steps - 1 and not self.last:
                self.phases.mark("recalibration")

        def on_test_begin(self, logs=None):
            if not self.last:
                self.phases.mark("validation")

        def on_test_end(self, logs=None):
            if not self.last:
                self.phases.mark("after_validation")

        def on_epoch_end(self, epoch, logs=None):
            self.phases.mark("between_epochs" if self.last else "epoch_end_callbacks")

    return PhaseCallback


def _graph_recalibration_class():
    from doodle.train.batchnorm import RecalibrateBatchNorm, batchnorm_layers

    class GraphRecalibration(RecalibrateBatchNorm):
        """The proposed variant: each BatchNorm layer's statistics of one batch (momentum 0, in one
        traced forward pass), averaged over the batches in float64, then assigned."""

        fn = None

        def on_train_batch_end(self, batch, logs=None):
            if batch != self.steps_per_epoch - 1:
                return
            import tensorflow as tf

            t0 = time.perf_counter()
            layers = batchnorm_layers(self.model)
            momentum = [layer.momentum for layer in layers]
            try:
                for layer in layers:
                    layer.momentum = 0.0
                if self.fn is None:
                    self.fn = tf.function(lambda x: self.model(x, training=True), reduce_retracing=True)
                sums, k = None, 0
                for images in self.batches(self.epoch):
                    self.fn(images)
                    k += 1
                    stats = [
                        (np.asarray(b.moving_mean, np.float64), np.asarray(b.moving_variance, np.float64))
                        for b in layers
                    ]
                    sums = stats if sums is None else [(m + a, v + b) for (m, v), (a, b) in zip(sums, stats)]
                for layer, (m, v) in zip(layers, sums or []):
                    layer.moving_mean.assign(m / k)
                    layer.moving_variance.assign(v / k)
            finally:
                for layer, m in zip(layers, momentum):
                    layer.momentum = m
            self.seconds += time.perf_counter() - t0

    return GraphRecalibration


# --------------------------------------------------------------------------- the parent
def run_config(config: str, a, cache: Path) -> dict:
    env = dict(os.environ)
    if "omp1" in config.split("+"):
        env["OMP_NUM_THREADS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--child", config, "--cache", str(cache)]
    cmd += ["--steps", str(a.steps), "--epochs", str(a.epochs), "--warmup", str(a.warmup), "--workdir", str(a.workdir)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"configuration {config} failed (exit {p.returncode})")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    info["process_s"] = round(time.perf_counter() - t0, 1)
    return info


def show(info: dict) -> None:
    t = info["total"]
    print(
        f"{info['config']:<22} train steps {info['train_images_per_s']:6.1f} img/s "
        f"({info['train_cpu_s_per_step']:.2f} CPU-s a step), "
        f"whole run {info['images_per_s']:6.1f} img/s ({t['seconds']:6.1f}s); "
        f"CPU user {t['user_s']:6.1f}s sys {t['sys_s']:6.1f}s "
        f"({100 * t['sys_s'] / max(t['user_s'] + t['sys_s'], 1e-9):3.0f}% sys), {t['minflt']:>10,} minor faults; "
        f"41-step epoch ~{info['projected_41_step_epoch_s']:5.1f}s; peak RSS {info['peak_rss_mb']} MB "
        f"(load {info['load_before']:.2f} -> {info['load_after']:.2f})",
        flush=True,
    )
    for k, v in info["phases"].items():
        if k != "train_steps" or len(info["phases"]) > 1:
            print(
                f"{'':<24}{k:<20} {v['seconds']:6.1f}s user {v['user_s']:6.1f}s sys {v['sys_s']:6.1f}s "
                f"{v['minflt']:>10,} faults"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/doodle-bench-train-throughput"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per epoch (batch 128)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps (tracing) before the timed epochs")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="stage|plain, +modifiers (see above)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        run_dir = a.workdir / f"run-{a.child}"
        info = child(a.child, a.cache, run_dir, a.steps, a.epochs, a.warmup)
        shutil.rmtree(run_dir, ignore_errors=True)
        print(json.dumps(info))
        return
    for c in a.configs:
        kind, *mods = c.split("+")
        if kind not in ("stage", "plain") or not set(mods) <= MODIFIERS:
            p.error(f"unknown configuration {c!r}: stage or plain, then +{'/+'.join(sorted(MODIFIERS))}")
    a.workdir.mkdir(parents=True, exist_ok=True)
    cache = build(a.workdir)
    print(
        f"MobileNet alpha 1.0, 64x64x1, 15 classes, batch {BATCH}: warm-up {a.warmup} steps, then "
        f"{a.epochs} x {a.steps} timed steps per configuration, each in a fresh process; {os.cpu_count()} CPUs",
        flush=True,
    )
    results = {}
    for c in a.configs:
        results[c] = run_config(c, a, cache)
        show(results[c])
    summary = {"configs": results, "steps": a.steps, "epochs": a.epochs, "batch": BATCH}
    for key, st in (("before", "stage+unfixed"), ("after", "stage")):
        if st not in results or "plain" not in results:
            continue
        rs, rp = results[st], results["plain"]
        summary[key] = {
            "stage_train_images_per_s": rs["train_images_per_s"],
            "stage_images_per_s": rs["images_per_s"],
            "plain_images_per_s": rp["images_per_s"],
            "stage_train_cpu_s_per_step": rs["train_cpu_s_per_step"],
            "plain_cpu_s_per_step": rp["train_cpu_s_per_step"],
            "step_time_ratio": round(rp["images_per_s"] / rs["train_images_per_s"], 3),
            "step_cpu_ratio": round(rs["train_cpu_s_per_step"] / rp["train_cpu_s_per_step"], 3),
            "epoch_41_ratio": round(rs["projected_41_step_epoch_s"] / rp["projected_41_step_epoch_s"], 3),
        }
        r = summary[key]
        print(
            f"{key} the fix ({st} vs plain): a training step takes {r['step_time_ratio']:.2f}x the time and "
            f"{r['step_cpu_ratio']:.2f}x the CPU of a plain one ({rs['train_cpu_s_per_step']:.2f} vs "
            f"{rp['train_cpu_s_per_step']:.2f} CPU-s); a 41-step epoch (recalibration, validation and saving "
            f"included): {rs['projected_41_step_epoch_s']:.1f}s vs {rp['projected_41_step_epoch_s']:.1f}s = "
            f"{r['epoch_41_ratio']:.2f}x"
        )
    summary["loadavg_1min"] = load()
    last_line(summary)


if __name__ == "__main__":
    main()
