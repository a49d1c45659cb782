"""Benchmark training throughput: the train stage's own code against a plain ``model.fit`` on numpy arrays.

    python -m benchmarks.train_throughput [--steps 8] [--epochs 2] [--warmup 2] [--configs stage plain]

Builds (or reuses, in --workdir) shards and a 64x64x1 render cache of real drawings
(``/work/shared/data/quickdraw-real15``: 15 classes x 400, 8 shards, the last for validation, so
5,231 training images = 41 batches of 128, as the train stage sees them; else the embedded
sample) with the project's own shard and render code. Then, for MobileNet alpha 1.0 at 64 px,
batch 128, each configuration runs in a fresh process (what this benchmark found is per process,
and depended on what the process had run before):

- ``stage``: the train stage's own functions: the training and validation streams
  (:mod:`doodle.train.feed`), the model compiled by :func:`doodle.train.compile.compiled_model`,
  the callbacks of :func:`doodle.train.compile.fit_callbacks` (BatchNorm recalibration,
  ReduceLROnPlateau, EarlyStopping, DVCLive rows, TrainingState backups, the epoch line,
  ChanceWatch, progress) and ``model.fit`` by :func:`doodle.train.trainer.fit`, validation included;
- ``stage+unfixed``: the same with ``restore_malloc_thresholds`` made a no-op: how the train stage
  ran before that fix;
- ``plain``: ``model.fit(x, y, batch_size=128)`` of the same model on the same training images
  held in memory as numpy (Adam, sparse cross-entropy, accuracy), nothing else.

The cause found: ``tf.data.Dataset.from_generator`` (in ``tf_dataset``) makes TensorFlow call
glibc's ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, so every tensor above 128 KiB was mmapped and
unmapped each step and its pages faulted in again (see ``doodle.core.malloc.restore_malloc_thresholds``).

Each runs a warm-up (tracing; for ``stage`` also one validation pass and a short recalibration),
then ``--epochs`` epochs of ``--steps`` steps, timed together. Reported per configuration: the
images/s of the training steps and of the whole timed run, the user and system CPU seconds and
minor page faults of the process over the timed run, its peak RSS, and for ``stage`` the seconds
of each phase (training steps, recalibration, validation, the epoch-end callbacks). A ``stage``
epoch of the real length (41 steps) is projected as 41 x its step time + its per-epoch phases,
against 41 plain steps. CPU seconds a step are the figure to trust on a loaded machine: wall
time there depends on what else runs. The load average is printed with each number: compare
figures measured in the same run, back to back. Last line: one JSON object.
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
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import last_line, source_folder

REAL15 = Path(__file__).resolve().parents[2] / "shared" / "data" / "quickdraw-real15"
CONFIGS = ("stage+unfixed", "plain", "stage")  # the figure of docs/performance.md: before and after the fix
BATCH = 128
REAL_EPOCH_STEPS = 41  # the train stage's epoch on real15: 5,231 images / 128


def load() -> float:
    return round(os.getloadavg()[0], 2)


def build(work: Path) -> Path:
    """Shards and a 64x64x1 render cache of real drawings in ``work`` (reused when present)."""
    from doodle.render.params import RenderSection
    from doodle.render.run import build_cache
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    cache = work / "cache"
    if not (cache / "manifest.json").exists():
        t0 = time.perf_counter()
        source = REAL15 if (REAL15 / "train_simplified").is_dir() else source_folder()
        write_shards(resolve_source(source), work / "shards", ShardParams(count=8, val_shards=[-1]), False)
        build_cache(work / "shards", cache, RenderSection(size=64), progress=False, log=lambda *a: None)
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


def phase_callback(phases: Phases, steps: int, last: bool = False):
    """First in the list: splits the timed fit into training steps, recalibration (it runs in the
    last step's ``on_train_batch_end``), validation and the epoch-end callbacks; a second one,
    ``last``, at the end of the list, marks where the epoch-end callbacks are done."""
    import keras

    class PhaseCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not last:
                phases.mark("train_steps")

        def on_train_batch_end(self, batch, logs=None):
            if batch >= steps - 1 and not last:
                phases.mark("recalibration")

        def on_test_begin(self, logs=None):
            if not last:
                phases.mark("validation")

        def on_test_end(self, logs=None):
            if not last:
                phases.mark("after_validation")

        def on_epoch_end(self, epoch, logs=None):
            phases.mark("between_epochs" if last else "epoch_end_callbacks")

    return PhaseCallback()


def time_stage(cache: Path, run_dir: Path, steps: int, epochs: int, warmup: int, phases: Phases, total: Phases):
    """The train stage's feed, compile, callbacks and fit on the cache, as one model of the stage."""
    import itertools

    from doodle.batches.batching import tf_dataset
    from doodle.batches.cache import open_split
    from doodle.render.format import read_cache_manifest
    from doodle.render.params import RenderSection
    from doodle.train.batchnorm import recalibrate
    from doodle.train.compile import compiled_model, fit_callbacks
    from doodle.train.feed import training_stream, validation_stream
    from doodle.train.params import TrainParams
    from doodle.train.strategy import Worker
    from doodle.train.trainer import Setup, fit

    cfg = TrainParams(model="mobilenet", width=1.0, batch_size=BATCH, epochs=epochs, steps_per_epoch=steps)
    manifest, render = read_cache_manifest(cache), RenderSection(size=64)
    train, _ = training_stream(cfg, render, BATCH, cache, cache.parent / "shards")  # the cache's images only
    val = validation_stream(open_split(cache, "val"), BATCH)
    model = compiled_model(cfg, train.image_shape, len(manifest["classes"]), len(train))
    # warm-up: trace the train and test functions; one short eager recalibration
    model.fit(tf_dataset(train, repeat=True), steps_per_epoch=warmup, epochs=1, verbose=0)
    model.evaluate(tf_dataset(val, repeat=False), steps=len(val), verbose=0)
    recalibrate(model, (x for x, _ in itertools.islice(train.epoch(999), 2)))
    shutil.rmtree(run_dir, ignore_errors=True)
    files = (run_dir / "backup", run_dir / "model.keras", run_dir / "dvclive")
    callbacks = fit_callbacks(cfg, model, train, BATCH, "bench", *files, printer=lambda *a, **k: None)
    timed = [phase_callback(phases, steps), *callbacks.all, phase_callback(phases, steps, last=True)]
    setup = Setup(render, render.raster(), None, "benchmark", Worker(), manifest, {}, cache, cache.parent / "shards")
    load_before = load()
    total.mark("all")
    fit(model, cfg, setup, train, val, replace(callbacks, all=timed), BATCH)
    phases.mark(None)
    total.mark(None)
    return load_before


def time_plain(cache: Path, steps: int, epochs: int, warmup: int, phases: Phases, total: Phases):
    """The same model's ``model.fit`` on the training images in memory, nothing else."""
    import keras

    from doodle.batches.cache import open_split
    from doodle.models import build_model
    from doodle.render.format import read_cache_manifest
    from doodle.train.params import TrainParams

    split = open_split(cache, "train")
    x, y = np.concatenate(split.images), np.concatenate(split.labels).astype(np.int32)
    n = steps * BATCH
    if n > len(x):
        raise SystemExit(f"--steps {steps} needs {n} images; the cache has {len(x)}")
    model = build_model("mobilenet", x.shape[1:], len(read_cache_manifest(cache)["classes"]), width=1.0, seed=0)
    optimizer = keras.optimizers.Adam(TrainParams().learning_rate)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[: warmup * BATCH], y[: warmup * BATCH], batch_size=BATCH, epochs=1, verbose=0)
    load_before = load()
    total.mark("all")
    phases.mark("train_steps")
    model.fit(x[:n], y[:n], batch_size=BATCH, epochs=epochs, verbose=0)
    phases.mark(None)
    total.mark(None)
    return load_before


def child(config: str, cache: Path, run_dir: Path, steps: int, epochs: int, warmup: int) -> dict:
    import keras

    if config == "stage+unfixed":  # how tf_dataset was: TensorFlow's 128 KiB mmap threshold stays
        import doodle.batches.batching

        doodle.batches.batching.restore_malloc_thresholds = lambda: False
    keras.utils.set_random_seed(0)
    phases, total = Phases(), Phases()
    if config == "plain":
        load_before = time_plain(cache, steps, epochs, warmup, phases, total)
    else:
        load_before = time_stage(cache, run_dir, steps, epochs, warmup, phases, total)
    info = {"config": config, "steps": steps, "epochs": epochs, "batch": BATCH, "load_before": load_before}
    info.update(load_after=load(), phases=phases.table(), total=total.table()["all"])
    images, step = steps * epochs * BATCH, info["phases"]["train_steps"]
    info["train_images_per_s"] = round(images / step["seconds"], 1)
    info["train_cpu_s_per_step"] = round((step["user_s"] + step["sys_s"]) / (steps * epochs), 3)
    info["images_per_s"] = round(images / info["total"]["seconds"], 1)
    per_epoch = sum(v["seconds"] for k, v in info["phases"].items() if k != "train_steps") / epochs
    info["per_epoch_extra_s"] = round(per_epoch, 2)
    info["projected_41_step_epoch_s"] = round(REAL_EPOCH_STEPS * step["seconds"] / (steps * epochs) + per_epoch, 1)
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return info


# --------------------------------------------------------------------------- the parent
def run_config(config: str, a, cache: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
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
        f"{info['config']:<14} train steps {info['train_images_per_s']:6.1f} img/s "
        f"({info['train_cpu_s_per_step']:.2f} CPU-s a step), "
        f"whole run {info['images_per_s']:6.1f} img/s ({t['seconds']:6.1f}s); "
        f"CPU user {t['user_s']:6.1f}s sys {t['sys_s']:6.1f}s "
        f"({100 * t['sys_s'] / max(t['user_s'] + t['sys_s'], 1e-9):3.0f}% sys), {t['minflt']:>10,} minor faults; "
        f"41-step epoch ~{info['projected_41_step_epoch_s']:5.1f}s; peak RSS {info['peak_rss_mb']} MB "
        f"(load {info['load_before']:.2f} -> {info['load_after']:.2f})",
        flush=True,
    )
    if len(info["phases"]) > 1:
        for k, v in info["phases"].items():
            print(
                f"{'':<16}{k:<20} {v['seconds']:6.1f}s user {v['user_s']:6.1f}s sys {v['sys_s']:6.1f}s "
                f"{v['minflt']:>10,} faults"
            )


def compare(results: dict, key: str, stage: str) -> dict | None:
    """``stage`` against ``plain``: step time, step CPU and a projected 41-step epoch, as ratios."""
    if stage not in results or "plain" not in results:
        return None
    rs, rp = results[stage], results["plain"]
    r = {
        "stage_train_images_per_s": rs["train_images_per_s"],
        "stage_images_per_s": rs["images_per_s"],
        "plain_images_per_s": rp["images_per_s"],
        "stage_train_cpu_s_per_step": rs["train_cpu_s_per_step"],
        "plain_cpu_s_per_step": rp["train_cpu_s_per_step"],
        "step_time_ratio": round(rp["images_per_s"] / rs["train_images_per_s"], 3),
        "step_cpu_ratio": round(rs["train_cpu_s_per_step"] / rp["train_cpu_s_per_step"], 3),
        "epoch_41_ratio": round(rs["projected_41_step_epoch_s"] / rp["projected_41_step_epoch_s"], 3),
    }
    print(
        f"{key} the fix ({stage} vs plain): a training step takes {r['step_time_ratio']:.2f}x the time and "
        f"{r['step_cpu_ratio']:.2f}x the CPU of a plain one ({rs['train_cpu_s_per_step']:.2f} vs "
        f"{rp['train_cpu_s_per_step']:.2f} CPU-s); a 41-step epoch (recalibration, validation and saving "
        f"included): {rs['projected_41_step_epoch_s']:.1f}s vs {rp['projected_41_step_epoch_s']:.1f}s = "
        f"{r['epoch_41_ratio']:.2f}x"
    )
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/doodle-bench-train-throughput"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per epoch (batch 128)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps (tracing) before the timed epochs")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="what to time (module doc)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        run_dir = a.workdir / f"run-{a.child}"
        info = child(a.child, a.cache, run_dir, a.steps, a.epochs, a.warmup)
        shutil.rmtree(run_dir, ignore_errors=True)
        print(json.dumps(info))
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    cache = build(a.workdir)
    classes = len(json.loads((cache / "manifest.json").read_text())["classes"])
    print(
        f"MobileNet alpha 1.0, 64x64x1, {classes} classes, batch {BATCH}: warm-up {a.warmup} steps, then "
        f"{a.epochs} x {a.steps} timed steps per configuration, each in a fresh process; {os.cpu_count()} CPUs",
        flush=True,
    )
    results = {}
    for c in a.configs:
        results[c] = run_config(c, a, cache)
        show(results[c])
    summary = {"configs": results, "steps": a.steps, "epochs": a.epochs, "batch": BATCH}
    for key, stage in (("before", "stage+unfixed"), ("after", "stage")):
        ratios = compare(results, key, stage)
        if ratios is not None:
            summary[key] = ratios
    summary["loadavg_1min"] = load()
    last_line(summary)


if __name__ == "__main__":
    main()
