"""Sources whose drawings are already pixels: Kaggle's Digit Recognizer folder and Google's
numpy_bitmap files. Both are read in blocks, so memory does not depend on the input size.

Digit Recognizer (``train.csv`` = ``label,pixel0..pixelN``, ``test.csv`` = ``pixel0..pixelN``):
each block of the CSV is split into lines here, not by a CSV parser, so that every row keeps its
number: a row's key_id is its 1-based number among the non-empty lines after the header, as
Kaggle numbers the test rows (ImageId). Numbers never move when rows are appended, so a row
stays in its shard (:func:`doodle.shard.format.shard_of` hashes the key_id). A bad row is not dropped:
it gets a reason (:data:`PIXEL_REASONS`) and goes to the quarantine (train) or is predicted from a
blank image (test).

numpy_bitmap (``<word>.npy``, N x 784 uint8, or N x 1 x 784, or N x 28 x 28): each file is one
class, memory-mapped and read a block of rows at a time. key_id is ``class_key(word) << 32 | row``
with ``class_key`` a 31-bit hash of the word, so ids depend neither on which other class files
are present nor on their order, and a class's rows keep their ids when rows are appended.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from doodle.core.errors import UserError

DIGIT_CLASSES = [str(d) for d in range(10)]
#: Why a pixel row is rejected, in the order they are checked (a row gets the first that applies).
PIXEL_REASONS = ("wrong_column_count", "bad_label", "non_integer_pixel", "pixel_out_of_range", "duplicate_key_id")
ROW_BITS = 32  # numpy_bitmap key_id: the row index takes the low 32 bits


class PixelSourceError(UserError, ValueError):
    """A pixel file that cannot be used at all (bad header, wrong array shape or type)."""


@dataclass
class PixelRows:
    """One block of rows: every row's key_id and reason (``""`` = good), and the images (zeros
    where the row is bad) and labels (-1 where unknown) of all of them, in file order."""

    position: np.ndarray  # int64, the 0-based row index in the file
    key_id: np.ndarray  # int64
    reason: np.ndarray  # object: "" or one of PIXEL_REASONS
    labels: np.ndarray  # int16
    images: np.ndarray  # uint8 (n, H, W)
    texts: pa.Array | None  # the raw lines (CSV only), for the quarantine
    nbytes: int  # input bytes this block covers (progress)

    def __len__(self) -> int:
        return len(self.key_id)

    @property
    def ok(self) -> np.ndarray:
        return self.reason == ""

    def rejected(self, classes: list[str]) -> list[tuple[str, str, str, str]]:
        """Quarantine rows (word, key_id, reason, row text) of the bad rows."""
        out = []
        for i in np.flatnonzero(~self.ok):
            lab = int(self.labels[i])
            text = self.texts[int(i)].as_py() if self.texts is not None else ""
            out.append((classes[lab] if lab >= 0 else "", str(int(self.key_id[i])), self.reason[i], text[:100_000]))
        return out


# --------------------------------------------------------------------------- Digit Recognizer CSV
def digit_header(path: str | Path, labelled: bool) -> tuple[int, int]:
    """Check a train.csv (``labelled``) or test.csv header; the image shape it declares."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.readline(1 << 20)
    try:
        header = head.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        header = None
    if header is None or "\0" in header:
        raise PixelSourceError(f"{path}: not a CSV text file (binary data in its first bytes)")
    names = header.split(",") if header else []
    first = ["label"] if labelled else []
    pixels = len(names) - len(first)
    side = math.isqrt(max(pixels, 0))
    expected = ",".join([*first, "pixel0", "...", f"pixel{max(pixels, 1) - 1}"])
    if names[: len(first)] != first or pixels < 4 or side * side != pixels:
        raise PixelSourceError(
            f"{path}: header {header[:80]!r} is not a Digit Recognizer header "
            f"({'label,' if labelled else ''}pixel0..pixelN-1 with N a square number such as 784)"
        )
    if names[len(first) :] != [f"pixel{i}" for i in range(pixels)]:
        raise PixelSourceError(f"{path}: pixel columns are not named in order; expected {expected}")
    return side, side


def iter_digit_rows(
    path: str | Path, labelled: bool, shape: tuple[int, int], block_bytes: int = 4 << 20
) -> Iterator[PixelRows]:
    """Every row of a Digit Recognizer CSV, a block at a time, checked (see :func:`parse_lines`)."""
    path = Path(path)
    row = 0
    with path.open("rb") as fh:
        header = len(fh.readline(1 << 20))
        carry = b""
        while True:
            chunk = fh.read(block_bytes)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)  # at the end: the last line, newline or not
            if cut == 0 and chunk:  # a line longer than the block: read on
                carry = data
                continue
            carry = data[cut:]
            lines = _lines(data[:cut])
            if len(lines):
                block = parse_lines(lines, row, labelled, shape)
                block.nbytes = cut + header
                header = 0
                yield block
                row += len(lines)
            if not chunk:
                return


def _lines(buf: bytes) -> pa.Array:
    """The non-empty lines of ``buf`` (whitespace and ``\\r`` trimmed) as one string array."""
    if not buf.endswith(b"\n"):
        buf += b"\n"
    ends = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
    offsets = np.concatenate([[0], ends + 1]).astype(np.int32)
    lines = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(buf))
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:  # not UTF-8: replace the bad bytes (such a row then fails as non-integer)
        return _lines(buf.decode("utf-8", "replace").encode())
    lines = pc.utf8_trim_whitespace(lines)
    return lines.filter(pc.greater(pc.utf8_length(lines), 0))


def parse_lines(lines: pa.Array, first_row: int, labelled: bool, shape: tuple[int, int]) -> PixelRows:
    """Check and convert CSV lines: the right number of fields, a label 0-9 (``labelled``), and
    every pixel an integer in 0..255; the first failed check is the row's reason."""
    n, pixels = len(lines), shape[0] * shape[1]
    fields = pixels + labelled
    reason = np.full(n, "", dtype=object)
    labels = np.full(n, -1, np.int16)
    images = np.zeros((n, pixels), np.uint8)
    parts = pc.split_pattern(lines, ",")
    good = pc.equal(pc.list_value_length(parts), fields).to_numpy(zero_copy_only=False)
    reason[~good] = "wrong_column_count"
    rows = np.flatnonzero(good)
    if len(rows):
        values, status = _integers(pc.list_flatten(parts.filter(pa.array(good))))
        values, status = values.reshape(len(rows), fields), status.reshape(len(rows), fields)
        if labelled:
            lab_ok = (status[:, 0] == 0) & (values[:, 0] >= 0) & (values[:, 0] <= 9)
            labels[rows[lab_ok]] = values[lab_ok, 0]
            reason[rows[~lab_ok]] = "bad_label"
            values, status = values[:, 1:], status[:, 1:]
        out_of_range = (status == 2) | ((status == 0) & ((values < 0) | (values > 255)))
        row_reason = np.where(
            (status == 1).any(axis=1), "non_integer_pixel", np.where(out_of_range.any(axis=1), "pixel_out_of_range", "")
        )
        free = reason[rows] == ""
        reason[rows[free]] = row_reason[free]
        ok = rows[reason[rows] == ""]
        images[ok] = values[reason[rows] == ""]
    position = np.arange(first_row, first_row + n, dtype=np.int64)
    return PixelRows(position, position + 1, reason, labels, images.reshape(n, *shape), lines, 0)


def _integers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values int64, status) of CSV fields: status 0 = an integer, 1 = not an integer,
    2 = an integer too long to hold (out of range whatever the range). Clean blocks take one cast."""
    try:
        values = pc.cast(text, pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
        return values, np.zeros(len(values), np.int8)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    trimmed = pc.utf8_trim_whitespace(text)
    integer = pc.match_substring_regex(trimmed, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False)
    short = pc.match_substring_regex(trimmed, r"^[+-]?0*[0-9]{1,9}$").to_numpy(zero_copy_only=False)
    values = np.zeros(len(text), np.int64)
    if short.any():
        values[short] = pc.cast(trimmed.filter(pa.array(short)), pa.int64()).to_numpy()
    status = np.where(integer, np.where(short, 0, 2), 1).astype(np.int8)
    return values, status


# --------------------------------------------------------------------------- numpy_bitmap
def bitmap_array(path: str | Path) -> np.ndarray:
    """A numpy_bitmap file memory-mapped as (N, H, W) uint8; a clear error for anything else."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PixelSourceError(f"{path}: not a numpy .npy array file ({str(exc).splitlines()[0]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise PixelSourceError(f"{path}: expected uint8 pixels, got {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.ndim == 3 and arr.shape[1] == 1:  # (N, 1, H*W), as some downloads are
        arr = arr.reshape(arr.shape[0], arr.shape[2])
    if arr.ndim == 2 and math.isqrt(arr.shape[1]) ** 2 == arr.shape[1] and arr.shape[1] >= 4:
        side = math.isqrt(arr.shape[1])
        return arr.reshape(arr.shape[0], side, side)
    if arr.ndim == 3 and min(arr.shape[1:]) >= 2:
        return arr
    raise PixelSourceError(f"{path}: expected N x 784, N x 1 x 784 or N x 28 x 28 pixels, got shape {arr.shape}")


def class_key(word: str) -> int:
    """A 31-bit id of a class name (the high bits of a numpy_bitmap key_id)."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") >> 1


def check_class_keys(classes: list[str]) -> None:
    """Two class names whose ids collide would mix their key_ids; refuse (it is ~1e-5 likely)."""
    seen: dict[int, str] = {}
    for word in classes:
        other = seen.setdefault(class_key(word), word)
        if other != word:
            raise PixelSourceError(f"classes {other!r} and {word!r} hash to the same key_id prefix; rename one file")


def iter_bitmap_rows(path: str | Path, label: int, block_rows: int, limit: int | None = None) -> Iterator[PixelRows]:
    """The rows of one numpy_bitmap class file (the first ``limit``), ``block_rows`` at a time
    (uint8: always valid). Rows past ``limit`` are never read from the map."""
    path = Path(path)
    arr = bitmap_array(path)
    if arr.shape[0] >= 1 << ROW_BITS:
        raise PixelSourceError(f"{path}: {arr.shape[0]} rows, more than a key_id can number (2^{ROW_BITS})")
    prefix = class_key(path.stem) << ROW_BITS
    rows = arr.shape[0] if limit is None else min(limit, arr.shape[0])
    for a in range(0, rows, block_rows):
        images = np.array(arr[a : min(a + block_rows, rows)])  # one block read from the map
        n = len(images)
        position = np.arange(a, a + n, dtype=np.int64)
        yield PixelRows(
            position,
            prefix + position,
            np.full(n, "", object),
            np.full(n, label, np.int16),
            images,
            None,
            images.nbytes,
        )
    del arr


def image_shape(kind: str, files: list[Path]) -> tuple[int, int]:
    """The image shape every input file of a pixel source shares (checked)."""
    shapes = {}
    for path in files:
        shapes[path] = digit_header(path, True) if kind == "digits" else bitmap_array(path).shape[1:]
    distinct = sorted(set(shapes.values()))
    if len(distinct) > 1:
        examples = {s: next(p.name for p, t in shapes.items() if t == s) for s in distinct}
        raise PixelSourceError(f"class files hold images of different sizes: {examples}")
    return tuple(int(v) for v in distinct[0])
