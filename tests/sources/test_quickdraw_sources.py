import json

import pyarrow as pa
import pytest

from doodle.sources.folder import SourceError, resolve_source
from doodle.sources.quickdraw import clean_block, iter_class_blocks
from tests.conftest import row, write_csv


def test_wrong_path_is_named(tmp_path):
    with pytest.raises(SourceError, match="nope.*does not exist"):
        resolve_source(tmp_path / "nope")


def test_folder_with_neither_layout_is_named(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match=f"{tmp_path}.*neither layout"):
        resolve_source(tmp_path)


def test_no_class_files(tmp_path):
    (tmp_path / "train_simplified").mkdir()
    with pytest.raises(SourceError, match="no class files"):
        resolve_source(tmp_path)


def test_non_class_files_skipped_with_warning(tmp_path, caplog):
    write_csv(tmp_path / "train_simplified" / "cat.csv", [row(1)])
    (tmp_path / "train_simplified" / "notes.txt").write_text("x")
    src = resolve_source(tmp_path)
    assert src.kind == "kaggle" and src.classes == ["cat"] and src.skipped == ["notes.txt"]
    assert "notes.txt" in caplog.text


def test_missing_required_column_stops_with_message(tmp_path):
    write_csv(tmp_path / "train_simplified" / "cat.csv", [["US", "[]", 1]], header=["countrycode", "drawing", "key_id"])
    src = resolve_source(tmp_path)
    with pytest.raises(SourceError, match="missing required column"):
        list(iter_class_blocks(src, "cat"))


def test_clean_block_row_reasons(tmp_path):
    rows = [
        row(1),
        row("abc"),
        row(3, word="dog"),
        row(4, rec="maybe"),
        row(5, drawing="[]"),
        row(6, cc="NA"),
        row("", drawing="[[[1],[2]]]"),
        row(99999999999999999999),
    ]
    write_csv(tmp_path / "train_simplified" / "cat.csv", rows)
    src = resolve_source(tmp_path)
    (table,) = list(iter_class_blocks(src, "cat"))
    block = clean_block(table, "cat")
    assert block.key_id.tolist() == [1, 6]
    assert block.countrycode.to_pylist() == ["US", "NA"]  # Namibia is not a null
    reasons = {r[1]: r[2] for r in block.rejected}
    assert reasons == {
        "abc": "bad_key_id",
        "3": "word_mismatch",
        "4": "bad_recognized",
        "5": "empty_drawing",
        "": "bad_key_id",
        "99999999999999999999": "bad_key_id",
    }
    assert len(block.strokes) == 2 and block.strokes.drawing(1) == [([1, 2], [3, 4])]


def test_ndjson_source(tmp_path):
    recs = [
        {
            "word": "cat",
            "countrycode": "US",
            "timestamp": "t",
            "recognized": True,
            "key_id": "12",
            "drawing": [[[1, 2], [3, 4]]],
        }
    ]
    (tmp_path / "cat.ndjson").write_text("\n".join(json.dumps(r) for r in recs) + "\n{broken\n")
    src = resolve_source(tmp_path)
    assert src.kind == "ndjson"
    (table,) = list(iter_class_blocks(src, "cat"))
    block = clean_block(table, "cat")
    assert block.key_id.tolist() == [12] and block.recognized.tolist() == [True]
    assert [r[2] for r in block.rejected] == ["malformed_json"]
    assert isinstance(table, pa.Table)
