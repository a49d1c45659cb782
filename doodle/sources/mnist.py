"""Pixel data on disk: MNIST's idx files and Kaggle's Digit Recognizer folder, and a converter
from the first to the second (``python -m doodle.sources.mnist mnist SRC OUT --train 8000``).

The converter exists so that tests and the README can run the digits workflow on real digits
(``../shared/data/mnist`` holds the MNIST test set as idx files) in exactly the layout Kaggle
ships: ``train.csv`` (``label,pixel0..pixel783``), ``test.csv`` (``pixel0..pixel783``), a
``sample_submission.csv`` (``ImageId,Label``), plus ``test_labels.csv`` (``ImageId,Label``, the
answers, which Kaggle keeps secret; the predict stage scores against it when present). It
streams: idx files are read and CSV rows written ``block`` images at a time.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doodle.core.errors import UserError

#: idx type codes (the third byte of the magic number) and their big-endian numpy types.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TOKENS = [str(i).encode() for i in range(256)]  # pixel values as CSV text, looked up, not formatted


class PixelFormatError(UserError, ValueError):
    """A file that is not what its name or the command says it is (idx, digits CSV)."""


class IdxFile:
    """An idx file (MNIST's format; plain or gzipped): its shape and dtype from the header, and
    its items in blocks (:meth:`blocks`), so memory does not grow with the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PixelFormatError(f"idx file not found: {self.path}")
        with self.path.open("rb") as fh:
            self.gzipped = fh.read(2) == b"\x1f\x8b"
        with self._open() as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES or magic[3] == 0:
                raise PixelFormatError(f"{self.path}: not an idx file (magic bytes {magic.hex() or 'missing'})")
            dims = np.frombuffer(fh.read(4 * magic[3]), ">u4")
            if len(dims) != magic[3]:
                raise PixelFormatError(f"{self.path}: idx header cut off")
        self.shape = tuple(int(d) for d in dims)
        self.dtype = np.dtype(IDX_TYPES[magic[2]])
        self.header_bytes = 4 + 4 * len(self.shape)

    def _open(self):
        return gzip.open(self.path, "rb") if self.gzipped else self.path.open("rb")

    def blocks(self, rows: int = 4096) -> Iterator[np.ndarray]:
        """The items (first axis) in blocks of up to ``rows``, native byte order."""
        item = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        left = self.shape[0]
        with self._open() as fh:
            fh.read(self.header_bytes)
            while left:
                n = min(rows, left)
                raw = fh.read(n * item)
                if len(raw) != n * item:
                    raise PixelFormatError(f"{self.path}: cut off ({self.shape[0] - left + len(raw) // item} items)")
                yield np.frombuffer(raw, self.dtype).reshape(n, *self.shape[1:]).astype(self.dtype.newbyteorder("="))
                left -= n


def find_mnist(folder: str | Path) -> list[tuple[IdxFile, IdxFile]]:
    """(images, labels) idx pairs in ``folder``: ``train-*`` before ``t10k-*`` (the MNIST names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PixelFormatError(f"{folder}: not a folder of MNIST idx files")
    pairs = []
    for prefix in ("train", "t10k"):
        images = sorted(folder.glob(f"{prefix}-images*idx3*"))
        labels = sorted(folder.glob(f"{prefix}-labels*idx1*"))
        if images and labels:
            pairs.append((IdxFile(images[0]), IdxFile(labels[0])))
    if not pairs:
        raise PixelFormatError(f"{folder}: no MNIST idx pair (train-images-idx3-ubyte[.gz] with train-labels-...)")
    for images, labels in pairs:
        if len(images.shape) != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise PixelFormatError(
                f"{images.path}, {labels.path}: expected N x H x W uint8 images and N labels, "
                f"got {images.shape} {images.dtype} and {labels.shape}"
            )
    return pairs


def csv_rows(images: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """Rows of a Digit Recognizer CSV: ``label,pixel0,...`` (or only pixels without labels)."""
    flat = images.reshape(len(images), -1)
    lines = []
    for i, row in enumerate(flat.tolist()):
        values = [_TOKENS[v] for v in row]
        if labels is not None:
            values.insert(0, str(int(labels[i])).encode())
        lines.append(b",".join(values))
    return b"\n".join(lines) + b"\n" if lines else b""


def csv_header(pixels: int, labelled: bool) -> bytes:
    return ",".join((["label"] if labelled else []) + [f"pixel{i}" for i in range(pixels)]).encode() + b"\n"


class DigitFolderWriter:
    """Writes a Digit Recognizer folder from a stream of (images, labels) blocks: the first
    ``train`` images go to train.csv, the rest to test.csv (ImageId = 1-based row there), with
    their answers in test_labels.csv and Kaggle's sample_submission.csv (every Label 0)."""

    def __init__(self, out: str | Path, train: int, pixels: int):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_left, self.image_id = train, 0
        self.files = {n: (self.out / n).open("wb") for n in ("train.csv", "test.csv", "test_labels.csv")}
        self.files["sample_submission.csv"] = (self.out / "sample_submission.csv").open("wb")
        self.files["train.csv"].write(csv_header(pixels, True))
        self.files["test.csv"].write(csv_header(pixels, False))
        self.files["test_labels.csv"].write(b"ImageId,Label\n")
        self.files["sample_submission.csv"].write(b"ImageId,Label\n")
        self.counts = {"train": 0, "test": 0}

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        k = min(self.train_left, len(images))
        if k:
            self.files["train.csv"].write(csv_rows(images[:k], labels[:k]))
            self.train_left -= k
            self.counts["train"] += k
        if k < len(images):
            self.files["test.csv"].write(csv_rows(images[k:]))
            ids = range(self.image_id + 1, self.image_id + 1 + len(images) - k)
            self.files["test_labels.csv"].write("".join(f"{i},{int(y)}\n" for i, y in zip(ids, labels[k:])).encode())
            self.files["sample_submission.csv"].write("".join(f"{i},0\n" for i in ids).encode())
            self.image_id += len(ids)
            self.counts["test"] += len(ids)

    def close(self) -> dict[str, int]:
        for fh in self.files.values():
            fh.close()
        return self.counts


def mnist_to_digits(src: str | Path, out: str | Path, train: int, progress: bool = True) -> dict[str, int]:
    """Convert MNIST idx files to a Digit Recognizer folder; the number of train and test rows."""
    pairs = find_mnist(src)
    total = sum(images.shape[0] for images, _ in pairs)
    if not 0 < train < total:
        raise PixelFormatError(f"--train {train}: must be in 1..{total - 1} ({src} holds {total} digits)")
    pixels = int(np.prod(pairs[0][0].shape[1:]))
    if any(int(np.prod(images.shape[1:])) != pixels for images, _ in pairs):
        raise PixelFormatError(f"{src}: the idx files hold images of different sizes")
    writer = DigitFolderWriter(out, train, pixels)
    try:
        with tqdm(total=total, unit="img", desc="mnist -> digits", disable=not progress) as bar:
            for images, labels in pairs:
                for x, y in zip(images.blocks(2048), labels.blocks(2048)):
                    writer.add(x, y)
                    bar.update(len(x))
    finally:
        counts = writer.close()
    return counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m doodle.sources.mnist", description=__doc__.strip().splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mnist", help="MNIST idx files -> a Digit Recognizer folder (train.csv, test.csv, ...)")
    m.add_argument("src", help="folder with the idx files (train-*/t10k-* images and labels, .gz or not)")
    m.add_argument("out", help="the Digit Recognizer folder to write (data.source)")
    m.add_argument("--train", type=int, required=True, help="the first N digits go to train.csv, the rest to test.csv")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        counts = mnist_to_digits(args.src, args.out, args.train, progress=not args.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(
        f"pixels: {counts['train']:,} digits -> {Path(args.out) / 'train.csv'}, {counts['test']:,} -> test.csv "
        "(answers in test_labels.csv)"
    )


if __name__ == "__main__":
    main()
