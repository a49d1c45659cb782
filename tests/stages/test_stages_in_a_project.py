"""The sample generator, and stages run end to end in a tiny project directory."""

import csv
import json
from pathlib import Path

import pytest

from doodle.core.params import ParamError, from_mapping
from doodle.sample.doodles import SHAPES
from doodle.sample.generate import SampleParams, generate
from doodle.sources.folder import SourceError
from tests.conftest import KAGGLE, NDJSON, needs_kaggle, needs_ndjson, write_params


def read(path):
    with Path(path).open(newline="") as fh:
        return list(csv.reader(fh))


def test_sample_is_deterministic_in_kaggle_format_and_balanced(tmp_path):
    cfg = SampleParams(seed=5, train_per_class=40, test_per_class=5, corrupt_fraction=0.0)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert len(SHAPES) >= 12 and len(list((tmp_path / "a" / "train_simplified").iterdir())) == len(SHAPES)
    for word in SHAPES:
        rows = read(tmp_path / "a" / "train_simplified" / f"{word}.csv")
        assert rows[0] == ["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"]
        assert len(rows) == 41 and {r[5] for r in rows[1:]} == {word}
        for r in rows[1:]:
            d = json.loads(r[1])
            assert all(0 <= v <= 255 and isinstance(v, int) for s in d for c in s for v in c)
            assert all(len(s) == 2 and len(s[0]) == len(s[1]) >= 1 for s in d)
    test = read(tmp_path / "a" / "test_simplified.csv")
    labels = read(tmp_path / "a" / "test_labels.csv")
    assert test[0] == ["key_id", "countrycode", "drawing"] and len(test) == len(labels) == 5 * len(SHAPES) + 1
    assert [r[0] for r in test[1:]] == [r[0] for r in labels[1:]]
    assert "smiley_face" in {r[1] for r in labels[1:]}  # Kaggle's underscores
    assert read(tmp_path / "a" / "sample_submission.csv")[0] == ["key_id", "word"]


def test_sample_params_are_checked():
    with pytest.raises(ParamError, match="sample.classes"):
        from_mapping(SampleParams, {"classes": ["unicorn"]}, "sample")


def test_sample_then_shard_end_to_end(project, capsys):
    from stages import sample, shard

    sample.main(["--quiet"])
    shard.main(["--quiet"])
    out = capsys.readouterr().out
    stats = json.loads(Path("data/shards/stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] + stats["rejected_total"] and stats["rejected_total"] > 0
    written = json.loads(Path("reports/sample.json").read_text())  # the sample stage's counts
    assert written["train_rows"] == stats["rows_in"] and written["corrupted_rows"] > 0
    assert written["classes"] == 4 and not Path("metrics/sample.json").exists()  # nothing to compare runs by
    assert "rejected" in out and "rows/s" in out
    man = json.loads(Path("data/shards/manifest.json").read_text())
    assert man["val_shards"] == [2] and len(man["files"]) == 3


def test_wrong_source_path_is_named(project):
    from stages import shard

    write_params(Path("params.yaml"), {"data": {"source": "no/such/folder"}})
    with pytest.raises(SourceError, match="no/such/folder"):
        shard.main(["--quiet"])


def _shard_real(source, tmp_path):
    from doodle.shard.params import ShardParams
    from doodle.shard.run import write_shards
    from doodle.sources.folder import resolve_source

    return write_shards(resolve_source(source), tmp_path, ShardParams(count=4), progress=False)


@needs_kaggle
def test_real_kaggle_drawings_shard_cleanly(tmp_path):
    stats = _shard_real(KAGGLE, tmp_path)
    assert len(stats["rows_per_class"]) == 340 and stats["rows_out"] == 7010 and stats["rejected_total"] == 0
    assert stats["rows_per_class"]["The Eiffel Tower"] > 0


@needs_ndjson
def test_real_ndjson_drawings_shard_cleanly(tmp_path):
    stats = _shard_real(NDJSON, tmp_path)
    assert len(stats["rows_per_class"]) == 6 and stats["rows_out"] > 100 and stats["rejected_total"] == 0
