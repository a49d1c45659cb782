"""Training and prediction under the JAX backend, with TensorFlow out of reach: the path a GPU machine
without TensorFlow takes (doodle.train.feed.StreamBatches, doodle.train.strategy.backend_strategy)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stages.cli import subprocess_env
from tests.conftest import LEARNED_FLOOR, LEARNS, REPO, work_on_copy

#: Run in the child: TensorFlow cannot be imported (as on a machine without it), then the stages.
NO_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError(f"{name} is not installed here (blocked by the test)")

sys.meta_path.insert(0, NoTensorFlow())
from stages import predict, train

train.main(["--quiet"])
predict.main(["--quiet"])
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
"""


class CountingStream:
    """A stream of 3 batches an epoch whose batches say which epoch and step they are."""

    batch_size = 2

    def __len__(self):
        return 3

    def epoch(self, epoch=0, own=True):
        for step in range(3):
            yield np.full((2, 1), epoch * 10 + step, np.float32), np.zeros(2, np.int32)


def test_stream_batches_read_epoch_after_epoch_in_order():
    from doodle.train.feed import StreamBatches

    batches = StreamBatches(CountingStream(), start_epoch=4)
    assert len(batches) == batches.num_batches == 3
    batches[0]  # Keras builds the model on a first batch, then starts over: the same epoch again
    seen = [[int(batches[i][0][0, 0]) for i in range(3)] for _ in range(2)]
    assert seen == [[40, 41, 42], [50, 51, 52]]  # pass p read to its end is the stream's epoch start_epoch + p
    batches[0]
    with pytest.raises(IndexError, match="in order"):
        batches[2]


class ShortStream(CountingStream):
    """An ordered (validation) stream of 2 batches, the last short, claiming 3 steps (more than it holds)."""

    def epoch(self, epoch=0, own=True):
        yield np.zeros((4, 1), np.float32), np.arange(4, dtype=np.int32)
        yield np.ones((3, 1), np.float32), np.arange(3, dtype=np.int32)


def test_stream_batches_wrap_around_a_short_validation_stream_and_cut_batches_to_the_devices():
    from doodle.train.feed import StreamBatches

    once = StreamBatches(ShortStream())
    assert [len(once[i][1]) for i in range(3)] == [4, 3, 4]  # the third step starts it over
    split = StreamBatches(ShortStream(), multiple=2)  # DataParallel over 2 devices: rows a multiple of 2
    assert [len(split[i][1]) for i in range(3)] == [4, 2, 4]


@pytest.mark.slow
def test_train_and_predict_under_jax_without_tensorflow(rendered, tmp_path, monkeypatch):
    pytest.importorskip("jax")
    proj = work_on_copy(rendered, tmp_path / "p", monkeypatch, LEARNS)
    env = {**subprocess_env(), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW], cwd=proj, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    meta = json.loads((proj / "models" / "main" / "model.json").read_text())
    assert "jax backend" in meta["device"]
    # Validation reads the same ordered batches every epoch: the best epoch's score is the final one.
    best = max(meta["history"]["val_map_at_3"])
    assert meta["metrics"]["val_map_at_3"] == pytest.approx(best, abs=1e-5)
    assert best >= LEARNED_FLOOR, meta["history"]["val_map_at_3"]  # it learned, under JAX too
    rows = (proj / "submissions" / "submission.csv").read_text().splitlines()
    assert rows[0] == "key_id,word" and len(rows) > 1
    # The saved model is plain Keras: it loads and predicts under TensorFlow too.
    import keras

    model = keras.saving.load_model(proj / "models" / "main" / "model.keras", compile=False)
    probs = np.asarray(model(np.zeros((2, *meta["input_shape"]), np.uint8)))
    assert probs.shape == (2, len(meta["classes"])) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path):
    """benchmarks/gpu.sh, as a GPU machine runs it (Keras on JAX), here on the CPU with tiny sizes."""
    pytest.importorskip("jax")
    env = {**subprocess_env(), "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, "WORKDIR": str(tmp_path / "w")}
    env.pop("KERAS_BACKEND", None)  # the script picks jax itself
    args = ["--steps", "1", "--warmup", "1", "--batch", "8", "--per-class", "20", "--models", "ours", "sequence"]
    args += ["--read-ahead", "0", "2", "--input-processes", "2"]
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), *args, "--json", str(tmp_path / "gpu.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "gpu.json").read_text())
    assert result["backend"] == "jax" and set(result["models"]) == {"ours", "sequence"}
    assert result["models"]["sequence"]["input_shape"] == [128, 5]  # ours-strokes: dx, dy, state, x, y
    for figures in result["models"].values():
        assert figures["model_images_per_s"] > 0 and figures["pipeline_images_per_s"] > 0
        assert set(figures["pipeline_images_per_s_by_read_ahead"]) == {"0", "2"}
        assert figures["pipeline_images_per_s_by_input_processes"]["2"] > 0  # the same batches, from 2 processes


RESUMED_UNDER_JAX = """
import sys

import keras
import numpy as np

from doodle.batches.processes import ProcessStream
from doodle.batches.strokes import StrokeStream, shard_paths
from doodle.drawing.augment import StrokeAugmentParams
from doodle.drawing.raster import RenderParams
from doodle.train.feed import StreamBatches


def stream():
    augment = StrokeAugmentParams(scale=0.1, rotation=10.0, stroke_dropout=0.2)
    shards = shard_paths(sys.argv[1], "train")
    return StrokeStream(shards, RenderParams(size=24), 8, shuffle=True, seed=1, steps=5, augment=augment, threads=1)


def passes(batches, count):
    return [[batches[i][0].copy() for i in range(len(batches))] for _ in range(count)]


if __name__ == "__main__":
    assert keras.backend.backend() == "jax"
    plain = passes(StreamBatches(stream()), 3)  # made in the training loop, epochs 0, 1, 2
    two, three = ProcessStream(stream(), 2), ProcessStream(stream(), 3)
    made = passes(StreamBatches(two), 3)
    resumed = passes(StreamBatches(three, start_epoch=2), 1)  # a run resumed at epoch 2
    two.close(), three.close()
    same = all(np.array_equal(a, b) for p, q in zip(plain + plain[2:], made + resumed) for a, b in zip(p, q))
    print("same" if same else "differ")
"""


@pytest.mark.slow  # a JAX process and its batch-making processes
def test_under_jax_the_batches_are_the_same_whatever_the_processes_and_after_a_resume(rendered):
    pytest.importorskip("jax")
    env = {**subprocess_env(), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [sys.executable, "-c", RESUMED_UNDER_JAX, str(rendered / "data/shards")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("same"), r.stdout[-2000:] + r.stderr[-3000:]
