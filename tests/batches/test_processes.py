"""Training batches made in worker processes (doodle.batches.processes.ProcessStream): the stream's
own batches in its order whatever the number of processes, an epoch started anew, a process's error
and a process's death each raised where the batches are read."""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest

from doodle.batches.processes import InputProcessDied, ProcessStream
from doodle.batches.strokes import StrokeStream, shard_paths
from doodle.drawing.augment import StrokeAugmentParams
from doodle.drawing.raster import RenderParams


def drawn(rendered, steps: int = 7, **share) -> StrokeStream:
    """The tiny project's training shards drawn on the fly, every stroke augmentation on; ``share``:
    a multi-worker share (``workers``, ``worker``)."""
    augment = StrokeAugmentParams(scale=0.1, shift=0.1, rotation=10, stroke_dropout=0.2)
    shards = shard_paths(rendered / "data/shards", "train")
    params = RenderParams(size=24)
    return StrokeStream(shards, params, 8, shuffle=True, seed=5, steps=steps, augment=augment, threads=1, **share)


def epochs(stream, count: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(x.copy(), y.copy()) for x, y in stream.epoch(e)] for e in range(count)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, u) and np.array_equal(y, v) for (x, y), (u, v) in zip(a, b))


@pytest.mark.parametrize("processes", [2, 3])  # 7 batches: shares of 4 + 3, and 3 + 2 + 2
def test_the_processes_make_the_streams_batches_in_its_order(rendered, processes):
    want = epochs(drawn(rendered))
    made = ProcessStream(drawn(rendered), processes)
    try:
        assert len(made) == 7 and made.image_shape == (24, 24, 1)
        got = epochs(made)
        assert all(same(w, g) for w, g in zip(want, got))
        first = made.epoch(1)
        next(first), next(first)
        first.close()  # Keras peeked at the epoch, then starts it over: the same batches from the first
        assert same([(x.copy(), y.copy()) for x, y in made.epoch(1)], want[1])
    finally:
        made.close()


class Broken:
    """A training stream whose second batch cannot be made."""

    workers, worker, shuffle, threads = 1, 0, True, 1
    batch_size, image_shape, dtype, steps, rows = 2, (3,), np.float32, 4, 8

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int = 0, own: bool = True):
        yield np.zeros((2, 3), np.float32), np.zeros(2, np.int32)
        raise ValueError("drawing 3 is broken")


def test_an_error_in_a_process_is_raised_as_itself_with_its_traceback():
    made = ProcessStream(Broken(), 1)
    try:
        batches = made.epoch(0)
        next(batches)
        with pytest.raises(ValueError, match="^drawing 3 is broken$") as err:  # as if made here
            next(batches)
        assert re.search(r"(?s)^Traceback.*in epoch\n", err.value.worker_traceback)
        assert str(err.value.__cause__).startswith("in the batch-making process 0:\nTraceback")  # Python prints it
    finally:
        made.close()


def test_a_process_that_dies_is_named(rendered):
    made = ProcessStream(drawn(rendered), 2)
    try:
        batches = made.epoch(0)
        next(batches)
        os.kill(made._makers[1].process.pid, signal.SIGKILL)  # as the OOM killer would
        made._makers[1].process.join()
        with pytest.raises(InputProcessDied, match="batch-making process 1 died"):
            for _ in batches:
                pass
    finally:
        made.close()


def test_a_workers_share_is_made_in_processes_and_only_a_training_stream(rendered):
    """Worker 1 of 2 makes batches 1, 3, 5, ... of the stream: in 2 processes, the same batches in the
    same order; ``own=False`` (BatchNorm recalibration) gives every worker's batches, as in-process."""

    def share() -> StrokeStream:
        return drawn(rendered, workers=2, worker=1)

    want = epochs(share())
    made = ProcessStream(share(), 2)
    try:
        assert same(epochs(made)[0], want[0]) and same(epochs(made)[1], want[1])
        every = [(x.copy(), y.copy()) for x, y in made.epoch(1, own=False)]
        assert len(every) == 14 and same(every, [(x.copy(), y.copy()) for x, y in share().epoch(1, own=False)])
    finally:
        made.close()
    shards = shard_paths(rendered / "data/shards", "train")
    with pytest.raises(ValueError, match="only a training stream"):
        ProcessStream(StrokeStream(shards, RenderParams(size=24), 8, shuffle=False), 2)


ORPHANED = """
import sys, time
from doodle.batches.processes import ProcessStream
from doodle.batches.strokes import StrokeStream, shard_paths
from doodle.drawing.raster import RenderParams

stream = StrokeStream(shard_paths(sys.argv[1], "train"), RenderParams(size=24), 8, shuffle=True, steps=50, threads=1)
made = ProcessStream(stream, 2)
next(made.epoch(0))
print(" ".join(str(m.process.pid) for m in made._makers), flush=True)
time.sleep(120)
"""


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an ended child nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # a training process started and killed
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_the_processes_end_when_the_training_process_is_killed(rendered):
    """A lost kernel or the OOM killer gives the training process no time to stop its processes:
    they see it gone and end by themselves."""
    import subprocess
    import sys
    import time

    from tests.conftest import subprocess_env

    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANED, str(rendered / "data/shards")],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the resource tracker's note that it freed the orphaned shared memory
        text=True,
    )
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(running(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(p) for p in pids), "batch-making processes outlived the training process"


def test_a_negative_number_of_input_processes_is_named():
    from doodle.core.params import ParamError, from_mapping
    from doodle.train.params import TrainParams

    with pytest.raises(ParamError, match=r"train.input_processes: must be >= 0"):
        from_mapping(TrainParams, {"input_processes": -1}, "train")


def test_made_in_a_process_the_stages_input_overlaps_the_training_step(rendered):
    """The mechanism the GPU needs: the stage's own input (drawn on the fly, through the Keras adapter
    StreamBatches) made in a process while the training thread waits for a step that does not hold
    Python's lock (a sleep, as a loop waiting for the device). In the training process, each step waits
    for its batch to be made (an epoch is the sum); in a process most of the making hides behind the
    steps (about the larger of the two). The figures are measured here, so any CPU's speed fits."""
    from doodle.train.feed import StreamBatches

    def stream():
        shards = shard_paths(rendered / "data/shards", "train")
        params = RenderParams(size=64, channels=1)
        return StrokeStream(shards, params, 512, shuffle=True, seed=5, steps=32, threads=1)

    def epoch_s(source, epoch: int, step_s: float) -> float:
        batches = StreamBatches(source, start_epoch=epoch)
        t0 = time.perf_counter()
        for i in range(len(batches)):
            batches[i]
            time.sleep(step_s)
        return time.perf_counter() - t0

    here = stream()
    epoch_s(here, 0, 0)  # the drawing kernels compiled, the shards read
    making = epoch_s(here, 1, 0)  # an epoch of making alone
    step_s = 2 * making / len(here)
    serial = epoch_s(here, 2, step_s)
    made = ProcessStream(stream(), 1)
    try:
        epoch_s(made, 0, 0)  # the process started
        overlapped = epoch_s(made, 2, step_s)
    finally:
        made.close()
    hidden = (serial - overlapped) / making  # the share of the making time the steps hid
    assert serial >= 0.9 * (making + len(here) * step_s)  # in the training process: one after the other
    assert hidden >= 0.5, f"making {making:.3f}s, serial epoch {serial:.3f}s, overlapped {overlapped:.3f}s"
