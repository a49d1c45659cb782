"""The embedded default data set: procedural doodles in exactly Kaggle's layout and formats.

A fresh clone has no Kaggle data and may download nothing, so the project draws its own:
simple shapes of real Quick, Draw! classes, made to look hand-drawn (wobbly edges, jittered
corners, random scale/rotation/shear/position, pen lifts, reversed or reordered strokes, a stray
stroke now and then) and written as ``train_simplified/<word>.csv``, ``test_simplified.csv`` and
``sample_submission.csv``, plus ``test_labels.csv`` with the true test labels (Kaggle keeps
those secret; here they let the default run score its own submission). Everything follows from
the seed. A small share of deliberately broken rows exercises the quarantine downstream.
:func:`write_doodles` takes plain arguments; params.yaml's ``sample`` section, and the choice
between these doodles and the digits, live in :mod:`doodle.sample.generate`.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from doodle.core.csvfiles import write_csv

Poly = np.ndarray  # (k, 2) float points in roughly [-1, 1]


def _ngon(n: int, rng, start=None) -> Poly:
    a0 = rng.uniform(0, 2 * np.pi) if start is None else start
    a = a0 + np.arange(n + 1) * 2 * np.pi / n
    return np.c_[np.cos(a), np.sin(a)]


def _arc(rng, a0, a1, r=1.0, cx=0.0, cy=0.0, n=None) -> Poly:
    n = n or int(rng.integers(10, 20))
    a = np.linspace(a0, a1, n)
    return np.c_[cx + r * np.cos(a), cy + r * np.sin(a)]


def _circle(rng):
    a0 = rng.uniform(0, 2 * np.pi)
    return [_arc(rng, a0, a0 + 2 * np.pi + rng.uniform(-0.3, 0.4), n=int(rng.integers(14, 26)))]


def _square(rng):
    p = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], float)
    return _maybe_split_closed(p, rng)


def _triangle(rng):
    return [np.array([[0, -1], [1, 0.8], [-1, 0.8], [0, -1]], float)]


def _hexagon(rng):
    return [_ngon(6, rng, start=rng.choice([0, np.pi / 6]))]


def _star(rng):
    a = -np.pi / 2 + np.arange(11) * np.pi / 5
    r = np.where(np.arange(11) % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
    if rng.random() < 0.3:  # pentagram drawn as five crossing lines
        idx = (np.arange(6) * 2) % 5
        a5 = -np.pi / 2 + idx * 2 * np.pi / 5
        return [np.c_[np.cos(a5), np.sin(a5)]]
    return [np.c_[r * np.cos(a), r * np.sin(a)]]


def _zigzag(rng):
    k = int(rng.integers(4, 9))
    x = np.linspace(-1, 1, k + 1)
    y = np.where(np.arange(k + 1) % 2 == 0, -0.4, 0.4) * rng.uniform(0.6, 1.4)
    return [np.c_[x, y]]


def _line(rng):
    k = int(rng.integers(2, 4))
    return [np.c_[np.linspace(-1, 1, k), rng.normal(0, 0.02, k)]]


def _moon(rng):
    outer = _arc(rng, np.pi / 2, 3 * np.pi / 2)
    rng.integers(10, 20)  # an unused draw, kept so the seeded sample (and its published scores) stay the same
    inner = _arc(rng, -np.pi / 2 - 0.2, -3 * np.pi / 2 + 0.2, r=0.8, cx=-0.3)
    return [np.r_[outer, inner]]


def _house(rng):
    body = np.array([[-0.8, -0.1], [-0.8, 1], [0.8, 1], [0.8, -0.1], [-0.8, -0.1]])
    roof = np.array([[-1, -0.1], [0, -1], [1, -0.1]])
    strokes = [body, roof]
    if rng.random() < 0.6:
        strokes.append(np.array([[-0.2, 1], [-0.2, 0.45], [0.2, 0.45], [0.2, 1]]))
    return strokes


def _smiley(rng):
    face = _circle(rng)[0]
    ex = rng.uniform(0.3, 0.45)
    eyes = [np.array([[-ex, -0.35], [-ex, -0.3]]), np.array([[ex, -0.35], [ex, -0.3]])]
    if rng.random() < 0.5:
        eyes = [e[:1] for e in eyes]  # one-point strokes: dots
    mouth = _arc(rng, 0.2 * np.pi, 0.8 * np.pi, r=0.55, n=8)
    return [face, *eyes, mouth]


def _lightning(rng):
    return [np.array([[0.2, -1], [-0.4, 0.05], [0.1, 0.05], [-0.3, 1], [0.5, -0.2], [0.0, -0.2], [0.45, -1]])]


def _envelope(rng):
    box = np.array([[-1, -0.65], [1, -0.65], [1, 0.65], [-1, 0.65], [-1, -0.65]])
    flap = np.array([[-1, -0.65], [0, 0.15], [1, -0.65]])
    return [box, flap]


def _diamond(rng):
    return [np.array([[0, -1], [0.65, 0], [0, 1], [-0.65, 0], [0, -1]])]


def _sun(rng):
    strokes = [_arc(rng, 0, 2 * np.pi, r=0.5)]
    k = int(rng.integers(6, 11))
    for a in rng.uniform(0, 0.5) + np.arange(k) * 2 * np.pi / k:
        strokes.append(np.array([[0.65 * np.cos(a), 0.65 * np.sin(a)], [np.cos(a), np.sin(a)]]))
    return strokes


def _cloud(rng):
    k = int(rng.integers(5, 8))
    pts = []
    for i in range(k):
        a = i * 2 * np.pi / k
        c = np.array([0.7 * np.cos(a), 0.45 * np.sin(a)])
        pts.append(_arc(rng, a - 1.1, a + 1.1, r=0.35, cx=c[0], cy=c[1], n=6))
    return [np.r_[tuple(pts)]]


def _stairs(rng):
    k = int(rng.integers(3, 6))
    pts = [[-1.0, 1.0]]
    for _i in range(k):
        x0, y0 = pts[-1]
        pts += [[x0, y0 - 2 / k], [x0 + 2 / k, y0 - 2 / k]]
    return [np.array(pts)]


def _maybe_split_closed(p: Poly, rng):
    if rng.random() < 0.3:  # drawn side by side, pen lifted between sides
        return [p[i : i + 2] for i in range(len(p) - 1)]
    return [p]


SHAPES: dict[str, Callable] = {
    "circle": _circle,
    "cloud": _cloud,
    "diamond": _diamond,
    "envelope": _envelope,
    "hexagon": _hexagon,
    "house": _house,
    "lightning": _lightning,
    "line": _line,
    "moon": _moon,
    "smiley face": _smiley,
    "square": _square,
    "stairs": _stairs,
    "star": _star,
    "sun": _sun,
    "triangle": _triangle,
    "zigzag": _zigzag,
}
COUNTRIES = ["US", "GB", "DE", "BR", "RU", "CA", "FR", "IN", "AU", "JP", "KR", "NA", "PL", "SE"]


def _wobble(p: Poly, rng, amount: float) -> Poly:
    """Subdivide long edges and add smooth noise, like a hand-held pen."""
    out = [p[0]]
    for a, b in itertools.pairwise(p):
        k = max(1, int(np.linalg.norm(b - a) / 0.5))
        for t in np.arange(1, k + 1) / k:
            out.append(a + (b - a) * t)
    q = np.asarray(out)
    return q + rng.normal(0, amount, q.shape)


def draw(word: str, rng: np.random.Generator) -> list[list[list[int]]]:
    """One hand-drawn-looking doodle of ``word`` as a simplified drawing (ints in 0..255)."""
    strokes = [np.asarray(s, float) for s in SHAPES[word](rng)]
    wobble = rng.uniform(0.015, 0.05)
    strokes = [_wobble(s, rng, wobble) if len(s) > 1 else s + rng.normal(0, 0.01, s.shape) for s in strokes]
    if len(strokes) > 1 and rng.random() < 0.3:
        strokes = [strokes[i] for i in rng.permutation(len(strokes))]
    strokes = [s[::-1] if rng.random() < 0.3 else s for s in strokes]
    if rng.random() < 0.15:  # pen lifted mid-stroke
        i = int(rng.integers(len(strokes)))
        s = strokes[i]
        if len(s) >= 4:
            cut = int(rng.integers(2, len(s) - 1))
            strokes[i : i + 1] = [s[:cut], s[cut - 1 :]]
    if rng.random() < 0.06:  # a stroke out of place
        c = rng.uniform(-1, 1, 2)
        strokes.append(c + np.cumsum(rng.normal(0, 0.15, (int(rng.integers(2, 5)), 2)), axis=0))
    angle = rng.normal(0, np.deg2rad(10)) if word != "line" else rng.uniform(0, np.pi)
    c, s_ = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s_], [s_, c]]) @ np.array(
        [[rng.uniform(0.8, 1.2), rng.normal(0, 0.08)], [0, rng.uniform(0.8, 1.2)]]
    )
    strokes = [st @ m.T for st in strokes]
    allp = np.concatenate(strokes)
    lo, hi = allp.min(0), allp.max(0)
    if rng.random() < 0.75:  # Google's simplification: top-left aligned, longest side 255
        scale, offset = 255 / max(hi - lo).max(), np.zeros(2)
    else:  # placed somewhere on the canvas at some size
        scale = rng.uniform(90, 250) / max(hi - lo).max()
        offset = rng.uniform(0, 1, 2) * (255 - (hi - lo) * scale)
    out = []
    for st in strokes:
        q = np.clip(np.rint((st - lo) * scale + offset), 0, 255).astype(int)
        keep = np.r_[True, np.any(q[1:] != q[:-1], axis=1)]  # no repeated points
        q = q[keep]
        out.append([q[:, 0].tolist(), q[:, 1].tolist()])
    return out


def _corrupt(row: list, rng, kind: str, other_word: str) -> list:
    """Break a valid train row in one of the ways real-world files break."""
    row = list(row)
    if kind == "malformed_json":
        row[1] = row[1][: max(1, len(row[1]) // 2)]
    elif kind == "empty_drawing":
        row[1] = "[]"
    elif kind == "xy_length_mismatch":
        d = json.loads(row[1])
        d[0][1] = d[0][1][:-1] or [1, 2]
        row[1] = json.dumps(d)
    elif kind == "coordinate_out_of_range":
        d = json.loads(row[1])
        d[0][0][0] = 300
        row[1] = json.dumps(d)
    elif kind == "word_mismatch":
        row[5] = other_word
    elif kind == "empty_string":
        row[1] = ""
    return row


CORRUPTIONS = [
    "malformed_json",
    "empty_drawing",
    "xy_length_mismatch",
    "coordinate_out_of_range",
    "word_mismatch",
    "empty_string",
    "duplicate_key_id",
]


TRAIN_HEADER = ["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"]


class _Rows:
    """Kaggle-like rows of doodles, every value drawn from one seeded generator. The order of its
    draws is the data set (same seed, same bytes; the default sample's hash is the pipeline's
    input), so each row draws its fields in a fixed order, and no key_id is handed out twice."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.used: set[int] = set()

    def key(self) -> int:
        while True:
            k = int(self.rng.integers(4_500_000_000_000_000, 6_700_000_000_000_000))
            if k not in self.used:
                self.used.add(k)
                return k

    def country(self) -> str:
        return COUNTRIES[int(self.rng.integers(len(COUNTRIES)))]

    def timestamp(self) -> str:
        r = self.rng
        return (
            f"2017-03-{int(r.integers(1, 29)):02d} {int(r.integers(0, 24)):02d}:"
            f"{int(r.integers(0, 60)):02d}:{int(r.integers(0, 60)):02d}.{int(r.integers(0, 99999)):05d} UTC"
        )

    def train(self, word: str) -> list:
        """One ``train_simplified/<word>.csv`` row, in TRAIN_HEADER's order."""
        country = self.country()
        drawing = json.dumps(draw(word, self.rng))
        return [country, drawing, self.key(), bool(self.rng.random() < 0.93), self.timestamp(), word]

    def test(self, word: str) -> tuple:
        """One test drawing as (key_id, countrycode, drawing, word)."""
        key, country = self.key(), self.country()
        return key, country, json.dumps(draw(word, self.rng)), word


def _break_some(rows: list, rng: np.random.Generator, fraction: float, words: list[str], word: str) -> int:
    """Break ``fraction`` of one class's train ``rows`` in place (a duplicate key_id is an appended
    copy), each class starting at a different kind of CORRUPTIONS so every kind turns up; return how many."""
    first = words.index(word)
    k = round(fraction * len(rows))
    for j, i in enumerate(rng.choice(len(rows), size=k, replace=False)):
        kind = CORRUPTIONS[(j + first) % len(CORRUPTIONS)]
        if kind == "duplicate_key_id":
            rows.append(list(rows[int(i)]))
        else:
            rows[int(i)] = _corrupt(rows[int(i)], rng, kind, words[(first + 1) % len(words)])
    return k


def _write_test(out: Path, test: list[tuple], words: list[str]) -> None:
    """The test drawings, their true labels (Kaggle's underscores) and a sample submission that
    guesses the first three classes for every drawing, as Kaggle's does."""
    write_csv(out / "test_simplified.csv", ["key_id", "countrycode", "drawing"], (r[:3] for r in test))
    write_csv(out / "test_labels.csv", ["key_id", "word"], ((r[0], r[3].replace(" ", "_")) for r in test))
    guess = " ".join(w.replace(" ", "_") for w in words[:3])
    write_csv(out / "sample_submission.csv", ["key_id", "word"], ((r[0], guess) for r in test))


def write_doodles(
    out_dir: str | Path,
    words: list[str],
    *,
    seed: int,
    train_per_class: int,
    test_per_class: int,
    corrupt_fraction: float,
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Write the doodles of ``words`` (sorted names from SHAPES) under ``out_dir``, replacing it, with
    ``corrupt_fraction`` of each class's train rows broken; return counts (``classes``,
    ``train_rows``, ``corrupted_rows``, ``test_rows``). ``progress(n)`` is told of every ``n``
    drawings made."""
    progress = progress or (lambda n: None)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "train_simplified").mkdir(parents=True)
    rows = _Rows(seed)
    n_bad = n_train = 0
    for w in words:
        train = [rows.train(w) for _ in range(train_per_class)]
        n_bad += _break_some(train, rows.rng, corrupt_fraction, words, w)
        n_train += len(train)
        progress(train_per_class)
        write_csv(out / "train_simplified" / f"{w}.csv", TRAIN_HEADER, train)
    test = [rows.test(w) for w in words for _ in range(test_per_class)]
    progress(len(test))
    _write_test(out, [test[i] for i in rows.rng.permutation(len(test))], words)
    return {"classes": len(words), "train_rows": n_train, "corrupted_rows": n_bad, "test_rows": len(test)}
