"""The embedded digits sample: handwriting-like digits in exactly Kaggle's Digit Recognizer layout.

A fresh clone has no MNIST and may download nothing, so ``sample.kind: digits`` draws its own
digits. Each is typeset in one of six OpenCV Hershey faces on a large canvas, its pen eroded or
dilated to a random width, warped by a random affine map (rotation, scale, aspect, shear, shift)
and a smooth elastic distortion (the handwriting wobble), blurred, and then normalised the way
MNIST was: the ink's bounding box is scaled to fit 20x20 keeping its aspect ratio (anti-aliased)
and placed in a 28x28 image with its centre of mass at the centre (give or take half a pixel).
Pen pressure and uneven ink vary the inked pixels; the background stays exactly 0, as in MNIST.
The pen widths match MNIST's (median ~2.3 px). A classifier trained on these digits recognises
real MNIST digits far above chance, and the digits of a held-out set almost perfectly.

Files, as on Kaggle: ``train.csv`` (``label,pixel0..pixel783``, 28x28 uint8 row-major, rows in
random order), ``test.csv`` (``pixel0..pixel783``), ``sample_submission.csv`` (``ImageId,Label``,
ImageId from 1), plus ``test_labels.csv`` (``ImageId,Label``: the true test labels, which Kaggle
keeps secret; here they let the run score its own submission). Everything follows from the seed,
and the files are written row by row: memory does not depend on the number of digits.
:func:`write_digits` takes plain arguments; params.yaml's ``sample`` section (``kind: digits``)
is read in :mod:`doodle.sample.generate`.

A small share of the train rows is deliberately broken, as real files break (a non-integer pixel,
a pixel of 300, a negative pixel, a row cut short, a missing label, a label that is no digit), so
the quarantine downstream is exercised.
"""

from __future__ import annotations

import csv
import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

DIGITS = [str(d) for d in range(10)]
SIDE = 28  # MNIST: 28x28 images
BOX = 20  # ... the digit's bounding box scaled to fit 20x20
CANVAS = 96  # the drawing canvas, before the MNIST normalisation
GLYPH = 48  # a glyph's ink height on it
PEN = (1.4, 3.2)  # stroke width range in 28x28 pixels (MNIST's: ~1.7-3.2, 10th-90th percentile)
WOBBLE = 3.5  # the elastic distortion's largest typical shift, in canvas pixels
FLOOR = 16  # 28x28 pixels this faint are background
PIXELS = SIDE * SIDE
HEADER = [f"pixel{i}" for i in range(PIXELS)]  # test.csv's; train.csv's has "label" first

# Six faces: OpenCV 5 draws FONT_HERSHEY_COMPLEX as SIMPLEX and TRIPLEX as DUPLEX (the same
# pixels), and ignores FONT_ITALIC, so those add nothing; slant comes from the shear below.
FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
]

# What is typeset for a digit, when not the digit itself: OpenCV 5's faces slash their zero, which
# handwriting rarely does (the letter O has the same oval), and most handwritten ones are a bare stroke
GLYPHS = {0: "O", 1: "1|"}

CORRUPTIONS = [
    "non_integer_pixel",
    "pixel_out_of_range",
    "negative_pixel",
    "short_row",
    "missing_label",
    "bad_label",
]

_TEXT = [str(v) for v in range(256)]  # int -> text, so writing a row is one join


def draw_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 image of ``digit`` (white ink on black, MNIST-normalised)."""
    font = FONTS[int(rng.integers(len(FONTS)))]
    glyphs = GLYPHS.get(digit, str(digit))
    canvas, height, width = _glyph(glyphs[int(rng.integers(len(glyphs)))], font)
    # OpenCV 5 draws a face's strokes in proportion to its size (any thickness above 1 is one bold
    # weight), so the pen is set by eroding or dilating the glyph towards a width drawn from PEN
    change = round(height * rng.uniform(*PEN) / BOX - width)
    if change:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(change) + 1, abs(change) + 1))
        canvas = (cv2.dilate if change > 0 else cv2.erode)(canvas, kernel)

    a = np.deg2rad(rng.normal(0.0, 9.0))  # rotation
    aspect = np.exp(rng.normal(0.0, 0.12))  # width:height, area kept
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shear = np.array([[np.sqrt(aspect), rng.normal(0.0, 0.15)], [0.0, 1.0 / np.sqrt(aspect)]])
    m = rng.uniform(0.85, 1.15) * rot @ shear
    centre = np.full(2, CANVAS / 2)
    shift = rng.normal(0.0, 2.0, 2)  # placed off centre (the normalisation centres it again, as MNIST's did)
    affine = np.c_[m, centre + shift - m @ centre]
    img = cv2.warpAffine(canvas, affine, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR, borderValue=0)
    img = _wobble(img, rng)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.2, 1.0))
    return _ink(_mnist_normalise(img, rng), rng)


def _wobble(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement of every pixel (an elastic distortion, as Simard et al. 2003
    augmented MNIST): a coarse grid of random shifts, interpolated, bends the strokes like a hand."""
    amount = rng.uniform(0.0, WOBBLE)
    coarse = rng.normal(0.0, amount, (2, 4, 4)).astype(np.float32)
    dx, dy = (cv2.resize(c, (CANVAS, CANVAS), interpolation=cv2.INTER_CUBIC) for c in coarse)
    grid = np.arange(CANVAS, dtype=np.float32)
    return cv2.remap(img, grid[None, :] + dx, grid[:, None] + dy, cv2.INTER_LINEAR, borderValue=0)


@functools.cache
def _glyph(text: str, font: int) -> tuple[np.ndarray, int, float]:
    """``text`` in ``font``, its ink GLYPH px high and centred on a black canvas (read-only), with the
    ink's height and its stroke width (twice the area over the outline's length, exact for a long
    thin stroke), in pixels. Faces differ in size at one font scale, and a glyph's ink is not
    centred on its text box, so it is drawn once to measure and again to size and place it."""

    def put(scale: float, org: tuple[int, int]) -> np.ndarray:
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        cv2.putText(canvas, text, org, font, scale, 255, 1, cv2.LINE_AA)
        return canvas

    def box(canvas: np.ndarray) -> tuple[int, int, int, int]:
        ys, xs = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
        return ys[0], ys[-1] + 1, xs[0], xs[-1] + 1

    probe = CANVAS // 4
    y0, y1, _, _ = box(put(1.0, (probe, CANVAS - probe)))
    scale = GLYPH / (y1 - y0)
    y0, y1, x0, x1 = box(put(scale, (probe, CANVAS - probe)))
    canvas = put(scale, (probe + (CANVAS - x1 - x0) // 2, CANVAS - probe + (CANVAS - y1 - y0) // 2))
    ink = (canvas > 127).astype(np.uint8)
    outline = sum(cv2.arcLength(c, True) for c in cv2.findContours(ink, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0])
    canvas.flags.writeable = False
    return canvas, y1 - y0, 2.0 * float(ink.sum()) / max(outline, 1.0)


def _mnist_normalise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fit the ink's bounding box into 20x20 keeping its aspect, then centre by centre of mass
    in 28x28 (as MNIST was made), give or take a fraction of a pixel of jitter."""
    ys, xs = np.nonzero(img > 30)
    if not len(ys):  # cannot happen with the sizes above; a blank digit stays blank
        return np.zeros((SIDE, SIDE), np.uint8)
    crop = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    f = BOX / max(h, w)
    small = cv2.resize(crop, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    mass = small.astype(np.float64)
    total = mass.sum()
    cy = (mass.sum(axis=1) @ np.arange(small.shape[0])) / total
    cx = (mass.sum(axis=0) @ np.arange(small.shape[1])) / total
    tx, ty = (SIDE - 1) / 2 - np.array([cx, cy]) + rng.normal(0.0, 0.5, 2)
    move = np.array([[1, 0, tx], [0, 1, ty]], np.float64)
    return cv2.warpAffine(small, move, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderValue=0)


def _ink(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pen pressure and uneven ink on the inked pixels; the background stays exactly 0, as in MNIST
    (whose anti-aliased edge is about a pixel wide: the faintest edge pixels are cut)."""
    ink = img.astype(np.float32) * rng.uniform(0.85, 1.3)
    ink *= 1.0 + rng.normal(0.0, 0.1, ink.shape).astype(np.float32)
    return np.where(img > FLOOR, np.clip(ink, 0, 255), 0).astype(np.uint8)


def _row(pixels: np.ndarray) -> list[str]:
    return [_TEXT[v] for v in pixels.reshape(-1).tolist()]


def _corrupt(fields: list[str], kind: str, rng: np.random.Generator) -> list[str]:
    """Break a valid ``label,pixel...`` train row in one of the ways real files break."""
    fields = list(fields)
    i = 1 + int(rng.integers(PIXELS))  # a pixel column
    if kind == "non_integer_pixel":
        fields[i] = rng.choice(["12.5", "abc", "0x1f", "nan"])
    elif kind == "pixel_out_of_range":
        fields[i] = "300"
    elif kind == "negative_pixel":
        fields[i] = "-4"
    elif kind == "short_row":
        fields = fields[: len(fields) - int(rng.integers(1, 40))]
    elif kind == "missing_label":
        fields[0] = ""
    elif kind == "bad_label":
        fields[0] = rng.choice(["10", "x", "-1"])
    return fields


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for train and test, so one's size never changes the other's digits."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


def _write_train(
    out: Path, digits: list[int], per_class: int, corrupt_fraction: float, rng: np.random.Generator, progress
) -> int:
    """``train.csv``: ``per_class`` of each digit in random order, ``corrupt_fraction`` of the rows
    broken (they stay in the file, for the quarantine); return how many are broken."""
    n_train = per_class * len(digits)
    labels = rng.permutation(np.repeat(np.array(digits, np.int8), per_class))
    bad = round(corrupt_fraction * n_train)
    broken = {int(i): CORRUPTIONS[j % len(CORRUPTIONS)] for j, i in enumerate(rng.choice(n_train, bad, False))}
    with (out / "train.csv").open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["label", *HEADER])
        for i, label in enumerate(labels.tolist()):
            fields = [_TEXT[label], *_row(draw_digit(label, rng))]
            if i in broken:
                fields = _corrupt(fields, broken[i], rng)
            wr.writerow(fields)
            if progress is not None and (i + 1) % 1000 == 0:
                progress(1000)
    if progress is not None:
        progress(n_train % 1000)
    return bad


def _write_test(out: Path, digits: list[int], per_class: int, rng: np.random.Generator) -> int:
    """``test.csv``, its true labels and Kaggle's sample submission (every label 0), ImageId from 1;
    return the number of test digits."""
    labels = rng.permutation(np.repeat(np.array(digits, np.int8), per_class))
    with (
        (out / "test.csv").open("w", newline="") as test_fh,
        (out / "test_labels.csv").open("w", newline="") as labels_fh,
        (out / "sample_submission.csv").open("w", newline="") as sub_fh,
    ):
        test_wr, labels_wr, sub_wr = csv.writer(test_fh), csv.writer(labels_fh), csv.writer(sub_fh)
        test_wr.writerow(HEADER)
        labels_wr.writerow(["ImageId", "Label"])
        sub_wr.writerow(["ImageId", "Label"])
        for image_id, label in enumerate(labels.tolist(), start=1):
            test_wr.writerow(_row(draw_digit(label, rng)))
            labels_wr.writerow([image_id, label])
            sub_wr.writerow([image_id, 0])
    return len(labels)


def write_digits(
    out_dir: str | Path,
    digits: list[int],
    *,
    seed: int,
    train_per_class: int,
    test_per_class: int,
    corrupt_fraction: float,
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Write the digits sample of ``digits`` (sorted, 0..9) under ``out_dir``, replacing it; return
    counts (``classes``, ``train_rows``, ``corrupted_rows``, ``test_rows``). ``progress(n)`` is
    called after every ``n`` digits drawn."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    train_rng, test_rng = _streams(seed)
    bad = _write_train(out, digits, train_per_class, corrupt_fraction, train_rng, progress)
    n_test = _write_test(out, digits, test_per_class, test_rng)
    if progress is not None:
        progress(n_test)
    n_train = train_per_class * len(digits)
    return {"classes": len(digits), "train_rows": n_train, "corrupted_rows": bad, "test_rows": n_test}
