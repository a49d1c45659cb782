"""The Kaggle-layout folder generator (benchmarks/kaggle_folder.py): the competition's exact layout
and formats at a chosen scale, every row a varied copy of a real drawing, the same bytes for
the same seed whatever the number of workers."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.kaggle_folder import (
    FULL_TEST_ROWS,
    FULL_TRAIN_ROWS,
    SUBMISSION_HEADER,
    TEST_HEADER,
    TRAIN_HEADER,
    KaggleFolderError,
    class_counts,
    key_ids,
    write_kaggle_folder,
)
from doodle.drawing.parse import parse_drawings
from doodle.sources.folder import resolve_source
from doodle.sources.quickdraw import clean_block, iter_class_blocks, iter_test_blocks, parse_key_ids
from tests.conftest import KAGGLE, needs_kaggle

SCALE = 0.0002
TRAIN_ROWS, TEST_ROWS = round(SCALE * FULL_TRAIN_ROWS), max(round(SCALE * FULL_TEST_ROWS), 340)
TIMESTAMP = re.compile(r"^2017-0[1-4]-\d\d \d\d:\d\d:\d\d\.\d{0,4}[1-9]$")

pytestmark = needs_kaggle


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))[1:]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("kaggle") / "folder"
    return out, write_kaggle_folder(out, SCALE, seed=3, workers=2, progress=False)


def test_layout_and_counts(folder):
    out, stats = folder
    names = sorted(p.name for p in (KAGGLE / "train_simplified").glob("*.csv"))
    assert sorted(p.name for p in (out / "train_simplified").iterdir()) == names
    assert sorted(p.name for p in (out / "train_raw").iterdir()) == names
    names.sort(key=lambda n: n[: -len(".csv")])  # class order: by word, as the pipeline sorts them
    assert sorted(p.name for p in out.iterdir()) == [
        "sample_submission.csv",
        "test_raw.csv",
        "test_simplified.csv",
        "train_raw",
        "train_simplified",
    ]  # no test_labels.csv: the competition has none
    counts = [len(rows(out / "train_simplified" / n)) for n in names]
    assert sum(counts) == stats["train_rows"] == TRAIN_ROWS and min(counts) >= 1
    assert counts == class_counts(TRAIN_ROWS, 340, 3).tolist()
    assert len(rows(out / "test_simplified.csv")) == stats["test_rows"] == TEST_ROWS
    assert stats["classes"] == 340
    assert stats["train_bytes"] == sum(p.stat().st_size for p in (out / "train_simplified").iterdir())
    assert stats["test_bytes"] == (out / "test_simplified.csv").stat().st_size
    raw = sum(p.stat().st_size for p in (out / "train_raw").iterdir()) + (out / "test_raw.csv").stat().st_size
    assert stats["raw_bytes"] == raw and 0.05 < raw / (stats["train_bytes"] + stats["test_bytes"]) < 0.3

    source = resolve_source(out)
    assert source.kind == "kaggle" and len(source.classes) == 340 and not source.skipped
    assert source.test_file == out / "test_simplified.csv" and source.test_labels_file is None


def test_formats_match_kaggle(folder):
    """Headers, CRLF line ends, quoting and every field's form, as the csv module writes Kaggle's files."""
    out, _ = folder
    for path, header in [
        (out / "train_simplified" / "The Eiffel Tower.csv", TRAIN_HEADER),
        (out / "test_simplified.csv", TEST_HEADER),
        (out / "sample_submission.csv", SUBMISSION_HEADER),
    ]:
        data = path.read_bytes()
        assert data.startswith(header) and data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        again = io.StringIO(newline="")
        csv.writer(again).writerows(csv.reader(io.StringIO(data.decode(), newline="")))
        assert again.getvalue().encode() == data  # quoted exactly where csv (and Kaggle) quotes
    real_codes = {r[0] for p in (KAGGLE / "train_simplified").glob("*.csv") for r in rows(p)}
    for path in (out / "train_simplified").glob("*.csv"):
        for cc, drawing, key, recognized, timestamp, word in rows(path):
            assert cc in real_codes and word == path.stem and recognized in ("True", "False")
            assert re.fullmatch(r"[1-9]\d{15}", key) and TIMESTAMP.match(timestamp), (key, timestamp)
            assert drawing.startswith("[[[") and "], [" in drawing and "," + " " in drawing
    sub = rows(out / "sample_submission.csv")
    assert [r[0] for r in sub] == [r[0] for r in rows(out / "test_simplified.csv")]
    for _, words in sub:
        assert len(words.split(" ")) == 3 and all(w and " " not in w for w in words.split(" "))


def test_rows_parse_as_the_pipeline_reads_them(folder):
    """Every row passes the project's own CSV reader and cleaning: no rejects, coordinates in 0..255."""
    out, _ = folder
    source = resolve_source(out)
    keys = []
    for word in source.classes:
        blocks = iter_class_blocks(source, word)
        for table in blocks:
            block = clean_block(table, word)
            assert not block.rejected, block.rejected[:1]
            assert len(block.strokes.x) and block.strokes.x.max() <= 255 and block.strokes.y.max() <= 255
            keys.append(block.key_id)
        assert not blocks.take_bad_rows()
    test_keys = []
    for table in iter_test_blocks(out / "test_simplified.csv"):
        parsed = parse_drawings(table["drawing"])
        assert parsed.valid.all()
        values, ok = parse_key_ids(table["key_id"])
        assert ok.all()
        test_keys.append(values)
    train_keys, test_keys = np.concatenate(keys), np.concatenate(test_keys)
    all_keys = np.concatenate([train_keys, test_keys])
    assert len(np.unique(all_keys)) == len(all_keys) == TRAIN_ROWS + TEST_ROWS  # unique, train and test disjoint


def test_copies_vary(folder):
    """No stage may be flattered by repetition: copies of a base drawing differ."""
    out, _ = folder
    distinct = total = unrecognized = 0
    for path in (out / "train_simplified").glob("*.csv"):
        r = rows(path)
        distinct += len({row[1] for row in r})
        total += len(r)
        unrecognized += sum(row[3] == "False" for row in r)
    assert distinct / total > 0.99
    assert 0.03 < unrecognized / total < 0.12  # the real rows: ~7.6% False
    test = rows(out / "test_simplified.csv")
    assert len({row[2] for row in test}) / len(test) > 0.99


def stroke_shapes(texts: list[str]) -> list[tuple[int, ...]]:
    """Each drawing's points per stroke."""
    b = parse_drawings(texts).strokes
    lengths = np.diff(b.point_offsets)
    return [tuple(lengths[b.stroke_offsets[i] : b.stroke_offsets[i + 1]].tolist()) for i in range(len(b))]


def test_copies_are_their_class_drawings(folder):
    """A copy is one of its class's real drawings, scaled and shifted: the same points per stroke,
    with at most one stroke dropped (and at least one left)."""
    out, _ = folder
    dropped = total = 0
    for path in (out / "train_simplified").glob("*.csv"):
        bases = set(stroke_shapes([r[1] for r in rows(KAGGLE / "train_simplified" / path.name)]))
        less_one = {b[:i] + b[i + 1 :] for b in bases if len(b) > 1 for i in range(len(b))}
        for shape in stroke_shapes([r[1] for r in rows(path)]):
            assert shape in bases or shape in less_one, (path.stem, shape)
            dropped += shape not in bases
            total += 1
    assert 0.02 < dropped / total < 0.15  # ~0.1 of the copies with 2+ strokes


def test_same_seed_same_bytes_whatever_the_workers(folder, tmp_path):
    out, _ = folder
    one = write_kaggle_folder(tmp_path / "one", SCALE, seed=3, workers=1, progress=False)
    assert tree_bytes(tmp_path / "one") == tree_bytes(out)
    assert one["train_rows"] == TRAIN_ROWS
    other = write_kaggle_folder(tmp_path / "other", SCALE, seed=4, raw_fraction=0, progress=False)
    assert (tmp_path / "other" / "train_simplified" / "cat.csv").read_bytes() != (
        out / "train_simplified" / "cat.csv"
    ).read_bytes()
    assert not (tmp_path / "other" / "train_raw").exists() and not (tmp_path / "other" / "test_raw.csv").exists()
    assert other["raw_bytes"] == 0


def test_refuses_a_used_folder_and_too_little_disk(folder, tmp_path):
    out, _ = folder
    with pytest.raises(KaggleFolderError, match="exists and is not an empty folder"):
        write_kaggle_folder(out, SCALE, progress=False)
    with pytest.raises(KaggleFolderError, match=r"not enough free disk at .*: need ~.* GB, .* GB free"):
        write_kaggle_folder(tmp_path / "huge", 1e6, progress=False)
    assert not (tmp_path / "huge").exists()


def test_class_counts_and_key_ids():
    counts = class_counts(FULL_TRAIN_ROWS, 340, 0)
    assert counts.sum() == FULL_TRAIN_ROWS and counts.min() >= 1
    assert 80_000 < counts.min() < counts.max() < 320_000
    assert class_counts(340, 340, 0).tolist() == [1] * 340
    keys = key_ids(0, 200_000, np.uint64(123), np.uint64(456))
    assert len(np.unique(keys)) == len(keys)
    assert keys.min() >= 10**15 and keys.max() < 10**16
