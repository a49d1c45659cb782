"""The embedded digits sample (doodle.sample.digits): Kaggle's Digit Recognizer layout, seeded, with
deliberately broken rows, and digits a simple classifier can tell apart (also on real MNIST)."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from doodle.core.params import ParamError, from_mapping
from doodle.sample.digits import CORRUPTIONS, PIXELS, draw_digit
from doodle.sample.generate import SampleParams, generate
from tests.conftest import SHARED, write_params

MNIST = SHARED / "mnist"
PIXEL_HEADER = [f"pixel{i}" for i in range(PIXELS)]


def digits_cfg(**kw) -> SampleParams:
    return from_mapping(SampleParams, {"kind": "digits", **kw}, "sample")


def read(path) -> list[list[str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.reader(fh))


def broken(row: list[str], labelled: bool) -> str | None:
    """Why a train.csv (``labelled``) or test.csv row is unusable, as a quarantine would say; None if clean."""
    if len(row) != PIXELS + labelled:
        return "wrong_column_count"
    if labelled and row[0] not in [str(d) for d in range(10)]:
        return "bad_label"
    for v in row[labelled:]:
        if not v.isdigit():
            return "non_integer_pixel"
        if int(v) > 255:
            return "pixel_out_of_range"
    return None


def images(rows: list[list[str]], labelled: bool) -> np.ndarray:
    return np.array([r[labelled:] for r in rows], np.int64).reshape(-1, 28, 28).astype(np.uint8)


def nearest_neighbour(train_x, train_y, test_x) -> np.ndarray:
    """1-NN in pixel space (squared Euclidean), numpy only."""
    a = train_x.reshape(len(train_x), -1).astype(np.float32) / 255
    b = test_x.reshape(len(test_x), -1).astype(np.float32) / 255
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]
    return np.asarray(train_y)[d.argmin(axis=1)]


def test_files_are_in_kaggles_layout_and_deterministic(tmp_path):
    cfg = digits_cfg(seed=3, train_per_class=12, test_per_class=4, corrupt_fraction=0.0)
    counts = generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["sample_submission.csv", "test.csv", "test_labels.csv", "train.csv"]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert counts == {"classes": 10, "train_rows": 120, "corrupted_rows": 0, "test_rows": 40}

    train = read(tmp_path / "a" / "train.csv")
    assert train[0] == ["label", *PIXEL_HEADER] and len(train) == 121
    assert all(broken(r, True) is None for r in train[1:])
    labels = [int(r[0]) for r in train[1:]]
    assert np.bincount(labels).tolist() == [12] * 10 and labels != sorted(labels)  # balanced, shuffled
    test = read(tmp_path / "a" / "test.csv")
    assert test[0] == PIXEL_HEADER and len(test) == 41 and all(broken(r, False) is None for r in test[1:])
    truth = read(tmp_path / "a" / "test_labels.csv")
    sub = read(tmp_path / "a" / "sample_submission.csv")
    assert truth[0] == sub[0] == ["ImageId", "Label"]
    assert [r[0] for r in truth[1:]] == [r[0] for r in sub[1:]] == [str(i) for i in range(1, 41)]  # ImageId from 1
    assert np.bincount([int(r[1]) for r in truth[1:]]).tolist() == [4] * 10

    im = images(train[1:], True)
    assert im[:, [0, -1], :].max() == 0 and im[:, :, [0, -1]].max() == 0  # a black border, as MNIST's
    assert im.reshape(len(im), -1).max(axis=1).min() > 150  # every digit is inked
    ys, xs = np.mgrid[:28, :28]
    mass = im.astype(np.float64).sum(axis=(1, 2))
    centre = np.stack([(im * ys).sum(axis=(1, 2)) / mass, (im * xs).sum(axis=(1, 2)) / mass], 1)
    assert np.abs(centre - 13.5).max() < 2.5  # centred by centre of mass

    generate(tmp_path / "c", digits_cfg(seed=4, train_per_class=12, test_per_class=4, corrupt_fraction=0.0))
    assert (tmp_path / "c" / "train.csv").read_bytes() != (tmp_path / "a" / "train.csv").read_bytes()


def test_test_set_does_not_depend_on_the_train_size(tmp_path):
    generate(tmp_path / "a", digits_cfg(train_per_class=5, test_per_class=3))
    generate(tmp_path / "b", digits_cfg(train_per_class=9, test_per_class=3))
    for name in ("test.csv", "test_labels.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_broken_train_rows_are_counted_and_of_every_kind(tmp_path):
    counts = generate(tmp_path, digits_cfg(seed=1, train_per_class=30, test_per_class=2, corrupt_fraction=0.04))
    assert counts["corrupted_rows"] == 12 and counts["train_rows"] == 300
    rows = read(tmp_path / "train.csv")[1:]
    assert len(rows) == 300  # broken rows stay in the file, to be quarantined downstream
    reasons = [broken(r, True) for r in rows]
    assert sum(r is not None for r in reasons) == 12
    assert {r for r in reasons if r} == {"wrong_column_count", "bad_label", "non_integer_pixel", "pixel_out_of_range"}
    assert sum(r[0] == "" for r in rows) == 2  # missing_label, two of the len(CORRUPTIONS) = 6 kinds
    assert len(CORRUPTIONS) == 6 and all(broken(r, False) is None for r in read(tmp_path / "test.csv")[1:])


def test_a_simple_classifier_learns_the_digits(tmp_path):
    """The generator draws the digit it names: 1-NN fitted on the train set scores > 0.8 on the test set."""
    generate(tmp_path, digits_cfg(seed=0, train_per_class=60, test_per_class=20, corrupt_fraction=0.0))
    train = read(tmp_path / "train.csv")[1:]
    truth = np.array([int(r[1]) for r in read(tmp_path / "test_labels.csv")[1:]])
    pred = nearest_neighbour(
        images(train, True), [int(r[0]) for r in train], images(read(tmp_path / "test.csv")[1:], False)
    )
    accuracy = float((pred == truth).mean())
    print(f"1-NN on 600 generated digits: {accuracy:.3f} on 200 generated test digits")
    assert accuracy > 0.8


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"{MNIST} not present")
def test_digits_resemble_real_mnist():
    """Informative: 1-NN fitted on generated digits, scored on 2,000 real MNIST test digits (chance 0.1)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 200)
    x = np.stack([draw_digit(int(d), rng) for d in y])
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as fh:
        real = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:2000]
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as fh:
        real_y = np.frombuffer(fh.read(), np.uint8, offset=8)[:2000]
    accuracy = float((nearest_neighbour(x, y, real) == real_y).mean())
    print(f"1-NN on 2,000 generated digits: {accuracy:.3f} on 2,000 real MNIST test digits")
    assert accuracy > 0.4  # 4x chance; measured about 0.6


def test_digit_params_are_checked():
    with pytest.raises(ParamError, match="sample.kind"):
        from_mapping(SampleParams, {"kind": "letters"}, "sample")
    with pytest.raises(ParamError, match="sample.classes"):
        digits_cfg(classes=["circle"])
    assert digits_cfg(classes=["8", "3"]).class_names() == ["3", "8"]
    assert SampleParams().kind == "doodles" and len(digits_cfg().class_names()) == 10


def test_a_subset_of_digits(tmp_path):
    generate(tmp_path, digits_cfg(classes=["3", "8"], train_per_class=5, test_per_class=2, corrupt_fraction=0.0))
    assert {r[0] for r in read(tmp_path / "train.csv")[1:]} == {"3", "8"}
    assert {r[1] for r in read(tmp_path / "test_labels.csv")[1:]} == {"3", "8"}


def test_sample_stage_writes_digits(project, capsys):
    from stages import sample

    write_params(Path("params.yaml"), {"sample": {"kind": "digits", "classes": None, "train_per_class": 8}})
    sample.main(["--quiet"])
    assert "sample (digits): 10 classes, 80 train rows" in capsys.readouterr().out
    assert len(read("data/sample/train.csv")) == 81 and not Path("data/sample/train_simplified").exists()
