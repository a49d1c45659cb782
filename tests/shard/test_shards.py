import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from doodle.core.params import ParamError, from_mapping
from doodle.sample.generate import SampleParams, generate
from doodle.shard.format import iter_shard_batches, read_classes, shard_of
from doodle.shard.params import ShardParams
from doodle.shard.run import TIMING_KEYS, write_shards
from doodle.sources.folder import resolve_source
from tests.conftest import row, write_csv


def test_shard_of_depends_only_on_key_and_count():
    keys = np.arange(5_000_000_000_000_000, 5_000_000_000_010_000, 7, dtype=np.int64)
    full = shard_of(keys, 8)
    assert np.array_equal(shard_of(keys[::3], 8), full[::3])
    counts = np.bincount(full, minlength=8)
    assert counts.min() > 0.8 * counts.mean()  # well spread


def shard_contents(out):
    man = json.loads((out / "manifest.json").read_text())
    return {f: pq.read_table(out / f).to_pylist() for f in man["files"]}


@pytest.fixture(scope="module")
def sample_src(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    generate(
        d,
        SampleParams(train_per_class=200, test_per_class=2, classes=["circle", "line", "star"], corrupt_fraction=0.05),
    )
    return resolve_source(d)


def test_same_input_and_seed_give_identical_shards(sample_src, tmp_path):
    write_shards(sample_src, tmp_path / "a", ShardParams(count=3), progress=False)
    write_shards(sample_src, tmp_path / "b", ShardParams(count=3), progress=False)
    assert shard_contents(tmp_path / "a") == shard_contents(tmp_path / "b")


def test_memory_budget_split_gives_the_same_shards(sample_src, tmp_path):
    """A shard bigger than memory_mb is shuffled in key-range buckets: same result as in one go."""
    write_shards(sample_src, tmp_path / "a", ShardParams(count=2), progress=False)
    # this sample's spills are ~30 KB a shard: a 5 KB budget makes ~6 buckets a shard
    write_shards(sample_src, tmp_path / "b", ShardParams(count=2, memory_mb=5000 / 2**20), progress=False)
    assert shard_contents(tmp_path / "a") == shard_contents(tmp_path / "b")


def test_shard_is_shuffled_and_a_drawings_shard_is_stable(sample_src, tmp_path):
    write_shards(sample_src, tmp_path / "a", ShardParams(count=3, seed=1), progress=False)
    write_shards(sample_src, tmp_path / "b", ShardParams(count=3, seed=2), progress=False)
    a = pq.read_table(tmp_path / "a" / "shard-000.parquet")
    b = pq.read_table(tmp_path / "b" / "shard-000.parquet")
    assert sorted(a["key_id"].to_pylist()) == sorted(b["key_id"].to_pylist())  # same members
    assert a["key_id"].to_pylist() != b["key_id"].to_pylist()  # other order
    labels = a["label"].to_numpy()
    assert (labels[1:] != labels[:-1]).mean() > 0.4  # classes are interleaved, not in file order


def test_bad_rows_counted_quarantined_never_lost(sample_src, tmp_path):
    stats = write_shards(sample_src, tmp_path / "s", ShardParams(count=3), progress=False)
    q = (tmp_path / "s" / "quarantine.csv").read_text().splitlines()
    assert stats["rejected_total"] == len(q) - 1 > 0
    assert stats["rows_in"] == stats["rows_out"] + stats["rejected_total"]
    assert stats["rejected"]["duplicate_key_id"] > 0 and stats["rejected"]["malformed_json"] > 0
    assert sum(stats["rows_per_shard"]) == stats["rows_out"] == sum(stats["rows_per_class"].values())
    assert read_classes(tmp_path / "s" / "classes.csv") == ["circle", "line", "star"]
    keys = np.concatenate(
        [k for f in range(3) for _, k, _ in iter_shard_batches(tmp_path / "s" / f"shard-{f:03d}.parquet")]
    )
    assert len(keys) == len(set(keys.tolist()))


def test_options_max_per_class_and_recognized_only(tmp_path):
    rows = [row(i, rec="True" if i % 2 else "False") for i in range(1, 41)]
    write_csv(tmp_path / "in" / "train_simplified" / "cat.csv", rows)
    write_csv(tmp_path / "in" / "train_simplified" / "dog.csv", [])
    src = resolve_source(tmp_path / "in")
    stats = write_shards(src, tmp_path / "o", ShardParams(count=2, max_per_class=7, recognized_only=True), False)
    assert stats["rows_out"] == 7 and stats["filtered_unrecognized"] >= 6
    assert stats["empty_class_files"] == ["dog.csv"]


def test_bad_params_are_named():
    with pytest.raises(ParamError, match="shard.count"):
        from_mapping(ShardParams, {"count": 0}, "shard")
    with pytest.raises(ParamError, match="shard.val_shards"):
        from_mapping(ShardParams, {"count": 4, "val_shards": [7]}, "shard")
    with pytest.raises(ParamError, match="shard.cuont"):
        from_mapping(ShardParams, {"cuont": 4}, "shard")
    with pytest.raises(ParamError, match="shard.count"):
        from_mapping(ShardParams, {"count": "8"}, "shard")
    with pytest.raises(ParamError, match="shard.workers"):
        from_mapping(ShardParams, {"workers": 0}, "shard")


def _without_timing(stats):
    return {k: v for k, v in stats.items() if k not in TIMING_KEYS}


def test_output_does_not_depend_on_the_number_of_workers(sample_src, tmp_path):
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        stats = write_shards(
            sample_src, out, ShardParams(count=3, workers=workers, memory_mb=20000 / 2**20), progress=False
        )
        assert stats["workers"] == workers
        runs[workers] = (
            shard_contents(out),
            _without_timing(stats),
            *((out / f).read_text() for f in ("quarantine.csv", "stats.json", "manifest.json")),
        )
    assert runs[1] == runs[2] == runs[3]
    assert not list((tmp_path / "w2").glob("_*"))  # spills and quarantine parts are cleaned up


def test_duplicate_key_across_files_keeps_the_first_file_whatever_the_workers(tmp_path):
    write_csv(tmp_path / "in" / "train_simplified" / "cat.csv", [row(i, word="cat") for i in range(1, 30)])
    write_csv(tmp_path / "in" / "train_simplified" / "dog.csv", [row(i, word="dog") for i in range(20, 50)])
    src = resolve_source(tmp_path / "in")
    for workers in (1, 2):
        out = tmp_path / f"o{workers}"
        stats = write_shards(src, out, ShardParams(count=2, workers=workers), progress=False)
        assert stats["rejected"]["duplicate_key_id"] == 10
        kept = {
            r["key_id"]: r["word"]
            for f in ("shard-000.parquet", "shard-001.parquet")
            for r in pq.read_table(out / f, columns=["key_id", "word"]).to_pylist()
        }
        assert all(kept[k] == "cat" for k in range(20, 30)) and len(kept) == 49


def test_a_bad_file_in_a_worker_stops_the_stage_with_its_name(tmp_path):
    write_csv(tmp_path / "in" / "train_simplified" / "cat.csv", [row(i, word="cat") for i in range(1, 30)])
    (tmp_path / "in" / "train_simplified" / "dog.csv").write_text("countrycode,key_id,word\nUS,1,dog\n")
    from doodle.sources.folder import SourceError

    with pytest.raises(SourceError, match=r"dog\.csv.*drawing"):
        write_shards(resolve_source(tmp_path / "in"), tmp_path / "o", ShardParams(count=2, workers=2), False)


def test_spills_elsewhere_in_small_batches_give_the_same_shards_and_are_removed(sample_src, tmp_path, monkeypatch):
    """shard.spill_dir moves pass 1's scratch files off the output's disk; the spill batch size only
    changes how rows are grouped on the way, never the shards; nothing is left behind, and what a
    killed run left there is cleared first."""
    from doodle.shard import shuffle
    from doodle.shard.run import spill_folder

    write_shards(sample_src, tmp_path / "a", ShardParams(count=3), progress=False)
    scratch = tmp_path / "scratch"
    stale = spill_folder(tmp_path / "b", str(scratch))
    stale.mkdir(parents=True)
    (stale / "000-w000.arrow").write_bytes(b"left by a killed run")
    monkeypatch.setattr(shuffle, "SPILL_BATCH_BYTES", 1)  # every routed piece its own batch
    stats = write_shards(sample_src, tmp_path / "b", ShardParams(count=3, spill_dir=str(scratch)), progress=False)
    assert shard_contents(tmp_path / "a") == shard_contents(tmp_path / "b")
    assert stats["spill_bytes"] > 0 and stats["spill_dir"] == str(stale)
    assert list(scratch.iterdir()) == [] and not (tmp_path / "b" / "_spill").exists()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_a_full_disk_is_one_line_before_anything_is_read(sample_src, tmp_path, monkeypatch):
    """Not enough free disk for the spills and the shards: one line naming what needs how much where,
    before reading any input; with the spills elsewhere each file system is checked on its own."""
    import shutil
    from collections import namedtuple

    from doodle.core import disk

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: usage(10**12, 10**12, 10_000))
    with pytest.raises(
        disk.DiskFullError, match=r"the shard stage's spill files and shards .*GB free.*shard.spill_dir"
    ):
        write_shards(sample_src, tmp_path / "out", ShardParams(count=3), progress=False)
    assert not (tmp_path / "out" / "_spill").exists()
    real = shutil.disk_usage
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: usage(1, 1, 10_000) if "scratch" in str(p) else real(p))
    monkeypatch.setattr(disk, "same_filesystem", lambda a, b: False)
    from doodle.shard import run

    monkeypatch.setattr(run, "same_filesystem", lambda a, b: False)
    (tmp_path / "scratch").mkdir()
    with pytest.raises(disk.DiskFullError, match=r"the shard stage's spill files \(.* at .*scratch"):
        write_shards(sample_src, tmp_path / "out", ShardParams(count=3, spill_dir=str(tmp_path / "scratch")), False)
