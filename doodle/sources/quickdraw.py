"""Input data sources: Kaggle's CSV folder, Google's ndjson folder, and the embedded sample, and
which layout a folder holds (:func:`resolve_source`, also for the pixel sources of
:mod:`doodle.sources.pixels`: a Digit Recognizer folder and numpy_bitmap files).

Every reader streams: a class file is read in blocks of about ``block_bytes`` so memory never
depends on the size of the input (Kaggle's train set is 340 files, 49.7M rows, ~24 GB).
Each block is then cleaned by :func:`clean_block`, which types the columns, parses the drawings
once, and returns every rejected row with its reason, never dropping one silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from doodle.drawing.parse import DRAWING_REASONS, OK, parse_drawings
from doodle.drawing.strokes import StrokeBatch

from .folder import Source, SourceError

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"]
TEST_COLUMNS = ["key_id", "countrycode", "drawing"]
#: Why a row is rejected, besides its drawing (:data:`doodle.drawing.parse.DRAWING_REASONS`).
ROW_REASONS = ("bad_key_id", "word_mismatch", "bad_recognized", "duplicate_key_id", "malformed_csv_row")
MALFORMED_ROW = "malformed_csv_row"  # a line the CSV parser could not split into the file's columns


class RawBlocks:
    """The raw text blocks of one input file (iterate for ``pa.Table`` s of string columns), and
    the lines that could not even be split into those columns (:meth:`take_bad_rows`).

    A class file cut off in the middle of its last row, or a line with a stray quote, is one
    bad row, not a bad file: Arrow hands such lines to a handler instead of failing the read,
    and the caller quarantines their raw text (reason ``malformed_csv_row``) with the others.
    """

    def __init__(self, tables_with_bad_rows):
        self.bad_rows: list[str] = []
        self._tables = tables_with_bad_rows(self.bad_rows)

    def __iter__(self) -> Iterator[pa.Table]:
        return self._tables

    def take_bad_rows(self) -> list[str]:
        """The bad lines seen since the last call."""
        rows = list(self.bad_rows)
        self.bad_rows.clear()
        return rows


def _csv_blocks(path: Path, columns: list[str], block_bytes: int, bad_rows: list[str]) -> Iterator[pa.Table]:
    read = pacsv.ReadOptions(block_size=block_bytes, use_threads=True)
    parse = pacsv.ParseOptions(invalid_row_handler=lambda row: bad_rows.append(row.text) or "skip")
    convert = pacsv.ConvertOptions(
        # Everything as text: typing happens in clean_block, so a bad value is a counted
        # reject instead of an exception that kills the whole file. "NA" is Namibia, not null.
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=False,
        null_values=[],
        include_columns=columns,
    )
    try:
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        if "Empty CSV file" in str(exc):
            return
        raise _unreadable(path, columns, exc) from None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise _unreadable(path, columns, exc) from None
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def _unreadable(path: Path, columns: list[str], exc: Exception) -> SourceError:
    """The one-line error for a file that is not a usable CSV: not text, or missing columns."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    try:
        header = head.split(b"\n", 1)[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        header = None
    if header is None or b"\0" in head:
        return SourceError(f"{path}: not a CSV text file (binary data in its first bytes)")
    missing = [c for c in columns if c not in header.split(",")]
    if missing:
        return SourceError(f"{path}: missing required column(s) {missing}; header is {header[:200]!r}")
    return SourceError(f"{path}: unreadable CSV: {str(exc).splitlines()[0]}")


def _ndjson_blocks(path: Path, word: str, block_bytes: int, bad_rows: list[str]) -> Iterator[pa.Table]:
    """Google's records ``{"word", "countrycode", "timestamp", "recognized", "key_id", "drawing"}``.

    The drawing is re-serialised to JSON text so it goes through the same parser as Kaggle's CSV;
    a line that is not JSON keeps its raw text and is rejected as malformed downstream (so
    ``bad_rows`` stays empty here).
    """
    cols = {c: [] for c in TRAIN_COLUMNS}

    def flush():
        table = pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()})
        for v in cols.values():
            v.clear()
        return table

    size = 0
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError
            except ValueError:
                rec = {"word": word, "drawing": line.decode("utf-8", "replace")[:100000], "key_id": ""}
            else:
                d = rec.get("drawing")
                rec["drawing"] = "" if d is None else json.dumps(d, separators=(",", ":"))
            for c in TRAIN_COLUMNS:
                v = rec.get(c, "")
                cols[c].append(v if isinstance(v, str) else json.dumps(v) if not isinstance(v, bool) else str(v))
            size += len(raw)
            if size >= block_bytes:
                size = 0
                yield flush()
    if cols["drawing"]:
        yield flush()


def iter_class_blocks(source: Source, word: str, block_bytes: int = 8 << 20) -> RawBlocks:
    """Raw text blocks of one class file, columns TRAIN_COLUMNS."""
    path = source.class_files[word]
    if source.kind == "kaggle":
        return RawBlocks(lambda bad: _csv_blocks(path, TRAIN_COLUMNS, block_bytes, bad))
    return RawBlocks(lambda bad: _ndjson_blocks(path, word, block_bytes, bad))


def iter_test_blocks(path: str | Path, block_bytes: int = 8 << 20) -> RawBlocks:
    """Raw text blocks of a Kaggle ``test_simplified.csv`` (key_id, countrycode, drawing)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"test file not found: {path}")
    return RawBlocks(lambda bad: _csv_blocks(path, TEST_COLUMNS, block_bytes, bad))


# --------------------------------------------------------------------------- cleaning
def parse_key_ids(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """key_id text -> (int64 values, ok mask). Non-digit, empty or over-int64 ids are not ok."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    stripped = pc.utf8_trim_whitespace(col)
    ok = pc.match_substring_regex(stripped, r"^[0-9]{1,19}$").to_numpy(zero_copy_only=False)
    values = np.zeros(len(col), np.int64)
    if ok.any():
        good = stripped.filter(pa.array(ok))
        try:
            values[ok] = pc.cast(good, pa.int64()).to_numpy()
        except pa.ArrowInvalid:  # a 19-digit id over int64: check one by one
            for i in np.flatnonzero(ok):
                v = int(stripped[int(i)].as_py())
                if v < 2**63:
                    values[i] = v
                else:
                    ok[i] = False
    return values, ok


@dataclass
class CleanBlock:
    """Typed valid rows of one block plus the rejected rows with their reasons."""

    key_id: np.ndarray  # int64
    countrycode: pa.Array
    recognized: np.ndarray  # bool
    timestamp: pa.Array
    strokes: StrokeBatch
    rejected: list[tuple[str, str, str, str]]  # (word, key_id text, reason, drawing text)

    def __len__(self) -> int:
        return len(self.key_id)


def clean_block(table: pa.Table, word: str) -> CleanBlock:
    """Type and validate one block of a class file whose rows should all be ``word``."""
    n = table.num_rows
    reason = np.full(n, "", dtype=object)
    # Drawing problems first: a line that is not even JSON is "malformed", whatever else it lacks.
    parsed = parse_drawings(table["drawing"])
    for code, name in DRAWING_REASONS.items():
        reason[parsed.status == code] = name
    key_id, key_ok = parse_key_ids(table["key_id"])
    reason[~key_ok & (reason == "")] = "bad_key_id"
    words = table["word"].combine_chunks()
    reason[(pc.not_equal(words, word).to_numpy(zero_copy_only=False)) & (reason == "")] = "word_mismatch"
    rec_text = pc.utf8_lower(pc.utf8_trim_whitespace(table["recognized"].combine_chunks()))
    recognized = pc.equal(rec_text, "true").to_numpy(zero_copy_only=False)
    rec_ok = pc.is_in(rec_text, pa.array(["true", "false"])).to_numpy(zero_copy_only=False)
    reason[~rec_ok & (reason == "")] = "bad_recognized"
    keep = reason == ""
    strokes = parsed.strokes
    if not keep.all():
        # Drawings that parsed fine but whose row is bad for another reason are dropped here.
        valid_rows = np.flatnonzero(parsed.status == OK)
        strokes = strokes.take(np.flatnonzero(keep[valid_rows]))
    rejected = []
    if not keep.all():
        drawings = table["drawing"]
        keys = table["key_id"]
        for i in np.flatnonzero(~keep):
            i = int(i)
            rejected.append((word, keys[i].as_py(), reason[i], drawings[i].as_py()))
    mask = pa.array(keep)
    return CleanBlock(
        key_id=key_id[keep],
        countrycode=table["countrycode"].combine_chunks().filter(mask),
        recognized=recognized[keep],
        timestamp=table["timestamp"].combine_chunks().filter(mask),
        strokes=strokes,
        rejected=rejected,
    )
