"""The one process-pool helper, and the render stage's output whatever its number of workers."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

from doodle.core.workers import WorkerDied, fork_map
from doodle.sources.folder import SourceError


def squares(worker, items, tick):
    for i in items:
        tick(1)
        yield (i, i * i, os.getpid())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_item_once_with_progress(workers):
    ticks = []
    out = list(fork_map(squares, range(20), workers, progress=ticks.append))
    assert sorted((i, sq) for i, sq, _ in out) == [(i, i * i) for i in range(20)]
    assert sum(ticks) == 20
    pids = {pid for *_, pid in out}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def failing(worker, items, tick):
    for i in items:
        if i == 3:
            raise SourceError(f"data/raw/file-{i}.csv: missing required column(s) ['word']")
        yield i


def test_a_workers_exception_is_raised_as_itself_with_its_traceback_kept(caplog):
    with caplog.at_level(logging.INFO), pytest.raises(SourceError, match="file-3.csv") as err:
        list(fork_map(failing, range(6), 2))
    assert "Traceback" in err.value.worker_traceback and "failing" in err.value.worker_traceback
    assert "Traceback" not in caplog.text  # logged at debug level only
    assert err.value.__cause__ is None  # a UserError: one line, the traceback only with --debug


def buggy(worker, items, tick):
    for i in items:
        yield [][i]  # an IndexError: a bug, not the user's


def test_a_bug_in_a_worker_shows_the_workers_traceback_as_its_cause():
    with pytest.raises(IndexError) as err:
        list(fork_map(buggy, range(6), 2))
    cause = str(err.value.__cause__)
    assert cause.startswith("in the worker process:\nTraceback") and "in buggy" in cause


def dying(worker, items, tick):
    for i in items:
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        yield i


def test_a_killed_worker_is_a_clear_error_not_a_hang():
    with pytest.raises(WorkerDied, match=r"shard reader process \d died .*signal 9.*lower shard.workers"):
        list(fork_map(dying, range(6), 2, what="shard reader", hint="lower shard.workers"))


def test_render_output_is_identical_for_one_and_two_workers(tmp_path):
    from doodle.batches.cache import open_split
    from doodle.render.params import RenderSection
    from doodle.render.run import build_cache
    from doodle.sample.generate import SampleParams, generate
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    generate(tmp_path / "src", SampleParams(train_per_class=80, test_per_class=1, classes=["circle", "star", "line"]))
    write_shards(resolve_source(tmp_path / "src"), tmp_path / "shards", ShardParams(count=4), progress=False)
    built = {}
    for workers in (1, 2):
        out = tmp_path / f"cache-{workers}"
        built[workers] = build_cache(
            tmp_path / "shards", out, RenderSection(workers=workers), progress=False, log=lambda *a: None
        )
        assert (out / "manifest.json").is_file()
    assert (tmp_path / "cache-1" / "manifest.json").read_bytes() == (
        tmp_path / "cache-2" / "manifest.json"
    ).read_bytes()
    for split in ("train", "val"):
        one, two = open_split(tmp_path / "cache-1", split), open_split(tmp_path / "cache-2", split)
        assert one.rows == two.rows > 0
        for a, b in zip(one.images + one.labels + one.keys, two.images + two.labels + two.keys):
            assert np.array_equal(a, b)
