"""Kaggle submission: top-3 labels per test drawing, its validation, class balancing and scoring.

Format: ``key_id,word`` where ``word`` is the three most likely labels, best first, separated by
spaces, with spaces inside a label written as ``_`` (``The_Eiffel_Tower``).

The Digit Recognizer's format is ``ImageId,Label``: one digit per test row, ImageId counting the
rows of test.csv from 1, in order (:func:`write_digit_submission` and its checks).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from doodle.core.csvfiles import write_csv
from doodle.core.errors import UserError
from doodle.core.metrics import map_at_3, top_k


class SubmissionError(UserError, ValueError):
    """A submission Kaggle would reject, with every problem found."""


def kaggle_label(word: str) -> str:
    return word.replace(" ", "_")


def write_submission(path: str | Path, key_ids: list[str], top3: np.ndarray, classes: list[str]) -> Path:
    labels = np.array([kaggle_label(c) for c in classes], dtype=object)
    return write_csv(path, ["key_id", "word"], ([key, " ".join(row)] for key, row in zip(key_ids, labels[top3[:, :3]])))


def write_top_k(
    path: str | Path, key_ids: list, probs: np.ndarray, classes: list[str], k: int, key: str = "key_id"
) -> Path:
    """The ``k`` best labels and their probabilities per row, as parquet (for blending and
    stacking: ``key_id, label_1, prob_1, ... label_k, prob_k``; ``ImageId`` first for digits)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    k = min(k, len(classes))
    order = top_k(probs, k)
    names = np.array([kaggle_label(c) for c in classes], dtype=object)
    cols = {key: pa.array(key_ids, pa.string() if key == "key_id" else pa.int64())}
    for j in range(k):
        cols[f"label_{j + 1}"] = pa.array(names[order[:, j]].tolist(), pa.string())
        cols[f"prob_{j + 1}"] = pa.array(np.take_along_axis(probs, order[:, j : j + 1], 1)[:, 0])
    path = Path(path)
    pq.write_table(pa.table(cols), path)
    return path


def validate_submission(path: str | Path, expected_key_ids: list[str], classes: list[str]) -> int:
    """Check ``path`` against the test key_ids; raise SubmissionError listing what is wrong."""
    known = {kaggle_label(c) for c in classes}
    rows, problems = _read_submission(path, ["key_id", "word"])
    keys = [r[0] for r in rows if r]
    if len(rows) != len(expected_key_ids):
        problems.append(f"{len(rows)} rows, expected {len(expected_key_ids)} (one per test drawing)")
    dup = len(keys) - len(set(keys))
    if dup:
        problems.append(f"{dup} duplicate key_id(s)")
    missing = set(expected_key_ids) - set(keys)
    extra = set(keys) - set(expected_key_ids)
    if missing:
        problems.append(f"{len(missing)} test key_id(s) missing, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{len(extra)} unknown key_id(s), e.g. {sorted(extra)[:3]}")
    bad = 0
    for r in rows:
        words = r[1].split(" ") if len(r) == 2 else []
        if len(words) != 3 or len(set(words)) != 3 or not set(words) <= known:
            bad += 1
            if bad <= 3:
                problems.append(f"row {r!r}: needs three distinct known labels")
    if bad > 3:
        problems.append(f"... {bad} such rows in all")
    _raise_if(path, problems)
    return len(rows)


def write_digit_submission(path: str | Path, image_ids: list[int], top1: np.ndarray, classes: list[str]) -> Path:
    """Kaggle's Digit Recognizer file: ``ImageId,Label``, one label (a class name: a digit) a row."""
    return write_csv(path, ["ImageId", "Label"], zip(image_ids, (classes[int(c)] for c in top1)))


def validate_digit_submission(path: str | Path, rows: int) -> int:
    """Check ``path`` is what Kaggle takes for a test.csv of ``rows`` rows: the header, ImageIds
    1..rows in order, and a label 0-9 in every row; raise SubmissionError listing what is wrong."""
    body, problems = _read_submission(path, ["ImageId", "Label"])
    if len(body) != rows:
        problems.append(f"{len(body)} rows, expected {rows} (one per test.csv row)")
    wrong_id = [i for i, r in enumerate(body, 1) if not r or r[0] != str(i)]
    if wrong_id:
        problems.append(f"{len(wrong_id)} row(s) whose ImageId is not its row number, e.g. row {wrong_id[0]}")
    bad = [r for r in body if len(r) != 2 or r[1] not in {str(d) for d in range(10)}]
    if bad:
        problems.append(f"{len(bad)} row(s) without one label 0-9, e.g. {bad[0]!r}")
    _raise_if(path, problems)
    return len(body)


def _read_submission(path: str | Path, header: list[str]) -> tuple[list[list[str]], list[str]]:
    """(rows after the header, problems so far: a wrong header) of a submission CSV."""
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh)
        first = next(reader, None)
        rows = list(reader)
    return rows, [] if first == header else [f"header is {first}, expected {header}"]


def _raise_if(path: str | Path, problems: list[str]) -> None:
    """One SubmissionError naming the file and every problem found, if any."""
    if problems:
        raise SubmissionError(f"{path}: " + "; ".join(problems))


def score_digits(labels_path: str | Path, submission: str | Path, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy of a digits submission against a ``test_labels.csv`` (``ImageId,Label``), and
    MAP@3 of the probabilities (row ``i`` is ImageId ``i + 1``); every answer must be scored."""
    truth = _read_digit_pairs(labels_path, "labels")
    guesses = _read_digit_pairs(submission, "submission")
    index = {c: i for i, c in enumerate(classes)}
    missing = [k for k in truth if k not in guesses]
    unknown = sorted({v for v in truth.values() if v not in index})
    if missing or unknown:
        raise SubmissionError(
            f"{labels_path}: "
            + (f"{len(missing)} labelled ImageId(s) not in the test set, e.g. {missing[:3]}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"labels {unknown[:5]} are not classes of the model" if unknown else "")
        )
    ids = np.array([int(k) for k in truth]) - 1
    labels = np.array([index[v] for v in truth.values()])
    return {
        "test_accuracy": float(np.mean([guesses[k] == v for k, v in truth.items()])) if truth else 0.0,
        "test_map_at_3": map_at_3(labels, np.asarray(probs)[ids]),
        "test_labelled_rows": len(truth),
    }


def _read_csv_pairs(path: str | Path, header: list[str], what: str = "labels") -> dict[str, str]:
    """A two-column CSV with exactly ``header`` as its first row (a submission or an answers
    file): first column -> second. A missing file, another header or a row of another width is
    one error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        first = next(reader, None)
        if first != header:
            raise SubmissionError(f"{path}: header is {first}, expected {header}")
        rows = [r for r in reader if r]
    bad = [r for r in rows if len(r) != 2]
    if bad:
        raise SubmissionError(f"{path}: {len(bad)} row(s) not of the form {','.join(header)}, e.g. {bad[0]!r}")
    return dict(rows)


def _read_digit_pairs(path: str | Path, what: str) -> dict[str, str]:
    """An ``ImageId,Label`` file: ImageIds are positive integers (written back without padding)."""
    pairs = _read_csv_pairs(path, ["ImageId", "Label"], what)
    bad = [(k, v) for k, v in pairs.items() if not k.strip().isdigit() or int(k) < 1]
    if bad:
        raise SubmissionError(f"{path}: {len(bad)} row(s) not of the form <ImageId>,<Label>, e.g. {list(bad[0])!r}")
    return {str(int(k)): v.strip() for k, v in pairs.items()}


def balance(probs: np.ndarray, iterations: int = 50, rate: float = 0.5, tol: float = 0.01) -> np.ndarray:
    """Rescale per-class probabilities so predicted top-1 counts even out.

    Kaggle's test set is balanced (about 330 drawings a class) while a model's top-1 choices are
    not. The winning teams multiplied each class's scores by a weight, raised where a class is
    predicted too rarely and lowered where too often, iterating until the counts are even; it
    gained them about 0.7% MAP@3. ``rate`` damps each step; stops once the largest relative
    deviation from the even count is under ``tol``.
    """
    probs = np.asarray(probs)
    n, c = probs.shape
    target = n / c
    weights = np.ones(c)
    top1 = WeightedTop1(probs)
    best, best_weights = np.inf, weights
    for _ in range(iterations):
        counts = np.bincount(top1(weights), minlength=c)
        deviation = np.abs(counts - target).max()
        if deviation < best:  # near-uniform scores can oscillate: keep the most even weights seen
            best, best_weights = deviation, weights.copy()
        if deviation <= max(tol * target, 1.0):
            break
        weights *= (target / np.maximum(counts, 0.5)) ** rate
        weights /= weights.mean()
    out = probs * best_weights
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


class WeightedTop1:
    """``argmax(probs * weights, axis=1)`` (float32) for many weight vectors, exactly, mostly
    without touching every class: a row's winner is among its ``k`` most likely classes unless
    their best weighted score is at most its k-th probability times the largest weight. Only
    such rows are recomputed over all classes, in row chunks. On 112,199 x 340 confident scores,
    balancing took 1.4-1.8 s instead of 10.4 s; near-uniform (untrained) scores are mostly
    recomputed, at about the cost of the plain argmax (~5 s)."""

    def __init__(self, probs: np.ndarray, k: int = 16, chunk_rows: int = 8192):
        self.probs = np.asarray(probs, np.float32)
        _n, c = self.probs.shape
        self.k, self.chunk_rows = min(k, c), chunk_rows
        if self.k < c:
            cand = np.argpartition(self.probs, c - self.k, axis=1)[:, c - self.k :]
            self.cand = np.sort(cand, axis=1)  # column order, so ties break as a full argmax does
            self.cand_p = np.take_along_axis(self.probs, self.cand, axis=1)
            self.kth = self.cand_p.min(axis=1)

    def _full(self, rows: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
        n = len(self.probs) if rows is None else len(rows)
        out = np.empty(n, np.int64)
        for a in range(0, n, self.chunk_rows):
            part = self.probs[a : a + self.chunk_rows] if rows is None else self.probs[rows[a : a + self.chunk_rows]]
            out[a : a + self.chunk_rows] = (part * weights).argmax(axis=1)
        return out

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        weights = np.asarray(weights, np.float32)
        if self.k == self.probs.shape[1]:
            return self._full(None, weights)
        rows = np.arange(len(self.cand))
        scores = self.cand_p * weights[self.cand]
        pick = scores.argmax(axis=1)
        # rounding is monotonic, so p * w <= kth * w_max holds in float32 too
        unsure = np.flatnonzero(scores[rows, pick] <= self.kth * weights.max())
        if unsure.size > len(rows) // 4:
            return self._full(None, weights)
        winner = self.cand[rows, pick]
        if unsure.size:
            winner[unsure] = self._full(unsure, weights)
        return winner


def score_submission(submission: str | Path, labels: str | Path) -> tuple[float, int]:
    """(MAP@3, rows scored) of a submission file against an answers file; every answer must be scored.
    Two files given the wrong way round (both are ``key_id,word``) are named, not scored 0."""
    answers = _read_csv_pairs(labels, ["key_id", "word"], "labels")
    guessed = _read_csv_pairs(submission, ["key_id", "word"], "submission")
    _refuse_swapped(submission, guessed, labels, answers)
    truth = {k: kaggle_label(w) for k, w in answers.items()}
    guesses = {k: w.split(" ") for k, w in guessed.items()}
    missing = set(truth) - set(guesses)
    if missing:
        raise SubmissionError(
            f"{submission}: no prediction for {len(missing)} labelled key_id(s), e.g. {sorted(missing)[:3]}"
        )
    vocab = {w: i for i, w in enumerate(sorted(set(truth.values())))}
    keys = list(truth)
    labels_idx = np.array([vocab[truth[k]] for k in keys])
    ranked = np.array([[vocab.get(g, -1) for g in (guesses[k] + [""] * 3)[:3]] for k in keys])
    return map_at_3(labels_idx, ranked), len(keys)


def _mostly(words: dict[str, str], guesses: int) -> bool:
    """More than half the rows hold ``guesses`` space-separated labels."""
    return sum(len(w.split()) == guesses for w in words.values()) * 2 > len(words) > 0


def _refuse_swapped(submission: Path | str, guessed: dict, labels: Path | str, answers: dict) -> None:
    """A submission has three labels a row (spaces inside a label are ``_``), an answers file one
    word a row (a class name, whose spaces are rare): both ways round at once means the two paths
    were swapped. A submission of one guess a row alone is legal, and scored."""
    if _mostly(answers, 3) and _mostly(guessed, 1):
        raise SubmissionError(
            f"the files look swapped: {labels} has three labels a row (a submission) and {submission} "
            "one word a row (answers); give the submission first, then the answers"
        )


def top3(probs: np.ndarray) -> np.ndarray:
    return top_k(probs, 3)
