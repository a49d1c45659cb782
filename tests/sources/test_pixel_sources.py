"""Pixel sources (Digit Recognizer folders, numpy_bitmap files): detection, row checks with their
quarantine reasons, image shards stable by id, the render pass-through, the test order, the
``ImageId,Label`` submission, and the MNIST idx converter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from doodle.batches.cache import open_split
from doodle.core.metrics import map_at_3_reference
from doodle.core.params import ParamError
from doodle.drawing.images import fit_images
from doodle.drawing.raster import RenderParams
from doodle.predict.inference import TrainedModel, predict_digit_file
from doodle.predict.submission import SubmissionError, score_digits, validate_digit_submission, write_digit_submission
from doodle.render.params import RenderSection
from doodle.render.run import build_cache
from doodle.shard.format import iter_image_batches
from doodle.shard.params import ShardParams
from doodle.shard.run import write_shards
from doodle.sources.folder import SourceError, resolve_source
from doodle.sources.mnist import DigitFolderWriter, IdxFile, PixelFormatError, csv_header, csv_rows, main
from doodle.sources.pixels import PIXEL_REASONS, PixelSourceError, class_key, digit_header
from tests.conftest import MNIST, needs_mnist


def digits(n: int, seed: int = 0, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic digits: pixel 0 holds the label (so a row can be traced), the rest noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    images[:, 0, 0] = labels
    return images, labels


def digit_folder(root: Path, images, labels, train: int) -> Path:
    writer = DigitFolderWriter(root, train, images[0].size)
    writer.add(images, labels)
    writer.close()
    return root


def shard_files(out: Path) -> dict[str, bytes]:
    """The shards and the quarantine (the manifest names the source folder)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".parquet", ".csv")}


def keys_by_shard(out: Path) -> dict[int, list[int]]:
    man = json.loads((out / "manifest.json").read_text())
    return {i: pq.read_table(out / f, columns=["key_id"])["key_id"].to_pylist() for i, f in enumerate(man["files"])}


# --------------------------------------------------------------------------- detection
def test_layouts_are_detected_and_ambiguity_needs_data_kind(tmp_path):
    images, labels = digits(20)
    src = resolve_source(digit_folder(tmp_path / "d", images, labels, train=15))
    assert src.kind == "digits" and src.classes == [str(d) for d in range(10)] and src.pixels
    assert src.test_file == tmp_path / "d" / "test.csv" and src.input_files() == [tmp_path / "d" / "train.csv"]
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "cat.npy", images.reshape(20, 784))
    np.save(tmp_path / "b" / "dog.npy", images)
    src = resolve_source(tmp_path / "b")
    assert src.kind == "numpy_bitmap" and src.classes == ["cat", "dog"] and src.test_file is None
    (tmp_path / "b" / "x.ndjson").write_text("")
    with pytest.raises(SourceError, match=r"several layouts \(numpy_bitmap, ndjson\); set data.kind"):
        resolve_source(tmp_path / "b")
    assert resolve_source(tmp_path / "b", "numpy_bitmap").classes == ["cat", "dog"]
    with pytest.raises(SourceError, match="is not a Kaggle Digit Recognizer folder"):
        resolve_source(tmp_path / "b", "digits")


def test_bad_digit_headers_are_named(tmp_path):
    bad = {
        "wrong first column": b"lable,pixel0,pixel1,pixel2,pixel3\n",
        "not square": b"label,pixel0,pixel1,pixel2\n",
        "misnamed": b"label,pixel0,pixel1,pixel3,pixel2\n",
        "binary": bytes(range(256)),
    }
    for i, head in enumerate(bad.values()):
        path = tmp_path / f"{i}.csv"
        path.write_bytes(head)
        with pytest.raises(PixelSourceError, match=str(path)):
            digit_header(path, labelled=True)
    (tmp_path / "ok.csv").write_bytes(b"\xef\xbb\xbfpixel0,pixel1,pixel2,pixel3\r\n")  # BOM and CRLF
    assert digit_header(tmp_path / "ok.csv", labelled=False) == (2, 2)


# --------------------------------------------------------------------------- bad rows
def test_broken_digit_rows_are_quarantined_with_reasons(tmp_path):
    images, labels = digits(30)
    good = csv_rows(images, labels).decode().splitlines()
    pix = ",".join(["0"] * 784)
    broken = {
        "wrong_column_count": ["3," + ",".join(["0"] * 783), "3," + pix + ",7", ""],
        "bad_label": ["x," + pix, "10," + pix, "," + pix, "-1," + pix],
        "non_integer_pixel": ["4,1.5," + pix[2:], "4,abc," + pix[2:], "4,," + pix[2:], "4,\udcff," + pix[2:]],
        "pixel_out_of_range": ["5,256," + pix[2:], "5,-1," + pix[2:], "5,99999999999999999999," + pix[2:]],
    }
    broken["wrong_column_count"][2] = "garbage"
    lines, expected = [], {}
    bad_rows = [(reason, text) for reason, texts in broken.items() for text in texts]
    for i, line in enumerate(good):  # a bad row after every second good one; blank lines do not count
        lines.append(line)
        if i % 2 and bad_rows:
            reason, text = bad_rows.pop()
            lines.append(text)
            expected[len(lines)] = reason
        if i == 10:
            lines.append("   ")
    src = tmp_path / "src"
    src.mkdir()
    body = "\r\n".join(lines[:11]) + "\r\n\r\n" + "\n".join(lines[11:])  # CRLF, an empty line, no final newline
    (src / "train.csv").write_bytes(csv_header(784, True) + body.encode("utf-8", "surrogateescape"))
    stats = write_shards(resolve_source(src), tmp_path / "out", ShardParams(count=3, block_mb=1), progress=False)
    assert stats["rows_in"] == len(good) + len(expected) and stats["rows_out"] == len(good)
    assert set(stats["rejected"]) == set(PIXEL_REASONS)
    assert {r: c for r, c in stats["rejected"].items() if c} == {r: len(t) for r, t in broken.items()}
    with (tmp_path / "out" / "quarantine.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # key_id = the row's number among the non-empty lines after the header (the blank lines skipped)
    numbering = [i for i, ln in enumerate(lines, 1) if ln.strip()]
    got = {int(r["key_id"]): r["reason"] for r in rows}
    assert got == {numbering.index(pos) + 1: reason for pos, reason in expected.items()}
    kept = sorted(k for ks in keys_by_shard(tmp_path / "out").values() for k in ks)
    assert len(kept) == len(good) and not set(kept) & set(got)


# --------------------------------------------------------------------------- stable image shards
def test_image_shards_are_stable_by_id_and_keep_the_pixels(tmp_path):
    images, labels = digits(400, seed=1)
    cfg = ShardParams(count=4, row_group_rows=64)
    digit_folder(tmp_path / "small", images[:250], labels[:250], train=250)
    digit_folder(tmp_path / "big", images, labels, train=400)  # the same rows, then 150 more
    write_shards(resolve_source(tmp_path / "small"), tmp_path / "s", cfg, progress=False)
    write_shards(resolve_source(tmp_path / "big"), tmp_path / "b", cfg, progress=False)
    small, big = keys_by_shard(tmp_path / "s"), keys_by_shard(tmp_path / "b")
    for shard, keys in small.items():  # every old row stays in its shard, in the same order
        assert [k for k in big[shard] if k <= 250] == keys
    assert sorted(k for ks in small.values() for k in ks) == list(range(1, 251))
    for labs, keys, pix in iter_image_batches(tmp_path / "b" / "shard-001.parquet", (28, 28)):
        assert (pix == images[keys - 1]).all() and (labs == labels[keys - 1]).all() and len(keys) <= 64
    one = write_shards(resolve_source(tmp_path / "big"), tmp_path / "w1", ShardParams(count=4, workers=1), False)
    two = write_shards(resolve_source(tmp_path / "big"), tmp_path / "w2", ShardParams(count=4, workers=2), False)
    assert shard_files(tmp_path / "w1") == shard_files(tmp_path / "w2") and one["rows_out"] == two["rows_out"] == 400


def test_numpy_bitmap_shapes_ids_and_max_per_class(tmp_path):
    images, _ = digits(90, seed=2)
    for name, arr in {"a": images.reshape(90, 784), "b": images.reshape(90, 1, 784), "c": images}.items():
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "cat.npy", arr)
        np.save(tmp_path / name / "dog.npy", arr[::-1])
    outs = [tmp_path / f"out-{n}" for n in "abc"]
    for name, out in zip("abc", outs):
        write_shards(resolve_source(tmp_path / name), out, ShardParams(count=3), progress=False)
    assert shard_files(outs[0]) == shard_files(outs[1]) == shard_files(outs[2])
    # ids depend on the class name and row only: another class file beside it changes none of them
    np.save(tmp_path / "c" / "ant.npy", images[:5])
    write_shards(resolve_source(tmp_path / "c"), tmp_path / "more", ShardParams(count=3), progress=False)
    for shard, keys in keys_by_shard(outs[2]).items():
        assert [k for k in keys_by_shard(tmp_path / "more")[shard] if k >> 32 != class_key("ant")] == keys
    every = {k for keys in keys_by_shard(outs[2]).values() for k in keys}
    assert {k for k in every if k >> 32 == class_key("cat")} == {(class_key("cat") << 32) + i for i in range(90)}
    capped = write_shards(
        resolve_source(tmp_path / "a"), tmp_path / "cap", ShardParams(count=3, max_per_class=7), False
    )
    assert capped["rows_per_class"] == {"cat": 7, "dog": 7} and capped["rows_in"] == 14
    assert capped["truncated_classes"] == 2
    np.save(tmp_path / "a" / "eye.npy", images.astype(np.float32))
    with pytest.raises(PixelSourceError, match="eye.npy: expected uint8"):
        write_shards(resolve_source(tmp_path / "a"), tmp_path / "x", ShardParams(count=3), False)
    np.save(tmp_path / "a" / "eye.npy", images[:, :5, :7])
    with pytest.raises(PixelSourceError, match="different sizes"):
        write_shards(resolve_source(tmp_path / "a"), tmp_path / "x", ShardParams(count=3), False)


def test_recognized_only_makes_no_sense_for_pixels(tmp_path):
    images, labels = digits(10)
    src = resolve_source(digit_folder(tmp_path / "d", images, labels, train=10))
    with pytest.raises(ParamError, match="shard.recognized_only"):
        write_shards(src, tmp_path / "o", ShardParams(count=2, recognized_only=True), False)


# --------------------------------------------------------------------------- render pass-through
def test_image_shards_pass_through_the_render_cache(tmp_path):
    images, labels = digits(120, seed=3)
    src = resolve_source(digit_folder(tmp_path / "d", images, labels, train=120))
    write_shards(src, tmp_path / "shards", ShardParams(count=3), progress=False)
    man = build_cache(tmp_path / "shards", tmp_path / "c28", RenderSection(size=28, workers=2), False, log=lambda s: 0)
    assert man["content"] == "images" and man["rows"] == 120
    for split in ("train", "val"):
        part = open_split(tmp_path / "c28", split)
        for imgs, keys in zip(part.images, part.keys):  # size 28: the pixels as they were
            assert imgs.shape[1:] == (28, 28, 1) and (imgs[..., 0] == images[keys - 1]).all()
    build_cache(tmp_path / "shards", tmp_path / "c16", RenderSection(size=16, channels=3), False, log=lambda s: 0)
    val = open_split(tmp_path / "c16", "val")
    want = np.stack([cv2.resize(images[k - 1], (16, 16), interpolation=cv2.INTER_AREA) for k in val.keys[0]])
    assert val.images[0].shape[1:] == (16, 16, 3) and (val.images[0] == want[..., None]).all()
    with pytest.raises(ParamError, match="render.train_cache"):
        build_cache(tmp_path / "shards", tmp_path / "c", RenderSection(train_cache=False), False, log=lambda s: 0)


def test_fit_images_resizes_each_image_as_opencv_does():
    images, _ = digits(9, seed=4)
    for size, how in ((20, cv2.INTER_AREA), (40, cv2.INTER_LINEAR)):
        out = fit_images(images, RenderParams(size=size))
        assert out.shape == (9, size, size, 1)
        assert all((out[i, ..., 0] == cv2.resize(images[i], (size, size), interpolation=how)).all() for i in range(9))


# --------------------------------------------------------------------------- predict: order, bad rows, submission
class _Pixel0:
    """A stand-in model: all its probability on the class pixel 0 (top-left) holds, mod 10."""

    output_shape = (None, 10)

    def __call__(self, images, training=False):
        out = np.full((len(images), 10), 0.01, np.float32)
        out[np.arange(len(images)), images[:, 0, 0, 0].astype(int) % 10] = 0.91
        return out


def test_digit_test_rows_keep_their_order_and_bad_rows_get_a_row(tmp_path):
    images, labels = digits(300, seed=5)
    folder = digit_folder(tmp_path / "d", images, labels, train=1)
    test = folder / "test.csv"
    text = test.read_bytes().split(b"\n")
    text[10] = b"1,2,3"  # row 10 (ImageId 10): wrong column count
    text[20] = text[20].replace(b",", b",x", 1)  # ImageId 20: a non-integer pixel
    test.write_bytes(b"\n".join(text))
    model = TrainedModel(Path("models/m.keras"), _Pixel0(), [str(d) for d in range(10)], RenderParams(28))
    result = predict_digit_file([model], test, 32, False, block_bytes=4096)  # many small blocks
    assert result.key_ids == list(range(1, 300)) and result.rejected == {
        "wrong_column_count": 1,
        "non_integer_pixel": 1,
    }
    top = result.probs.argmax(axis=1)
    seen = labels[1:].copy()
    seen[[9, 19]] = 0  # predicted from a blank image
    assert (top == seen).all()
    sub = tmp_path / "submission.csv"
    write_digit_submission(sub, result.key_ids, top, model.classes)
    assert validate_digit_submission(sub, 299) == 299
    scores = score_digits(folder / "test_labels.csv", sub, result.probs, model.classes)
    ranked = np.argsort(-result.probs, axis=1, kind="stable")[:, :3].tolist()
    assert scores["test_labelled_rows"] == 299 and scores["test_accuracy"] == pytest.approx((seen == labels[1:]).mean())
    assert scores["test_map_at_3"] == pytest.approx(map_at_3_reference(labels[1:].tolist(), ranked))


def test_digit_submission_checks(tmp_path):
    sub = tmp_path / "s.csv"
    sub.write_text("ImageId,Label\n1,3\n3,4\n2,x\n")
    with pytest.raises(SubmissionError) as err:
        validate_digit_submission(sub, 4)
    assert "3 rows, expected 4" in str(err.value) and "ImageId is not its row number" in str(err.value)
    assert "without one label 0-9" in str(err.value)
    (tmp_path / "labels.csv").write_text("ImageId,Label\n1,3\n9,4\n")
    with pytest.raises(SubmissionError, match="not in the test set"):
        score_digits(tmp_path / "labels.csv", sub, np.zeros((3, 10)), [str(d) for d in range(10)])


# --------------------------------------------------------------------------- the MNIST converter
def test_idx_reader_rejects_what_is_not_idx(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")  # cut off after one dimension
    with pytest.raises(PixelFormatError, match="header cut off"):
        IdxFile(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04....")
    with pytest.raises(PixelFormatError, match="not an idx file"):
        IdxFile(tmp_path / "y")


@needs_mnist
def test_mnist_converts_to_the_digit_recognizer_layout(tmp_path, capsys):
    main(["mnist", str(MNIST), str(tmp_path / "d"), "--train", "9950", "--quiet"])
    assert "9,950 digits" in capsys.readouterr().out
    src = resolve_source(tmp_path / "d")
    assert src.kind == "digits" and digit_header(src.test_file, labelled=False) == (28, 28)
    with (tmp_path / "d" / "test_labels.csv").open() as fh:
        labels = list(csv.reader(fh))
    assert labels[0] == ["ImageId", "Label"] and [r[0] for r in labels[1:]] == [str(i) for i in range(1, 51)]
    first = next(IdxFile(MNIST / "t10k-images-idx3-ubyte.gz").blocks(9951))
    with (tmp_path / "d" / "test.csv").open() as fh:
        rows = list(csv.reader(fh))[1:]
    assert len(rows) == 50 and [int(v) for v in rows[0]] == first[9950].ravel().tolist()
    with pytest.raises(SystemExit):
        main(["mnist", str(MNIST), str(tmp_path / "e"), "--train", "10000", "--quiet"])
    assert "--train 10000: must be in 1..9999" in capsys.readouterr().err
