import subprocess
import sys

import numpy as np
import pytest

from doodle.core.metrics import map_at_3
from doodle.drawing.raster import RenderParams
from doodle.drawing.strokes import StrokeBatch
from doodle.predict.inference import TrainedModel, predict_probs
from doodle.predict.submission import (
    SubmissionError,
    balance,
    score_submission,
    top3,
    validate_submission,
    write_submission,
)
from tests.conftest import subprocess_env

CLASSES = ["The Eiffel Tower", "cat", "smiley face", "dog"]


def test_writer_orders_best_first_and_uses_underscores(tmp_path):
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.05, 0.05, 0.2]])
    p = write_submission(tmp_path / "s.csv", ["11", "22"], top3(probs), CLASSES)
    assert p.read_text().splitlines() == [
        "key_id,word",
        "11 ".strip() + ",smiley_face cat The_Eiffel_Tower",
        "22,The_Eiffel_Tower dog cat",
    ]
    assert validate_submission(p, ["11", "22"], CLASSES) == 2


@pytest.mark.parametrize(
    "body,expected,message",
    [
        ("11,cat dog cat\n22,cat dog smiley_face\n", ["11", "22"], "three distinct"),
        ("11,cat dog\n22,cat dog smiley_face\n", ["11", "22"], "three distinct"),
        ("11,cat dog horse\n22,cat dog smiley_face\n", ["11", "22"], "known labels"),
        ("11,cat dog smiley_face\n", ["11", "22"], "missing"),
        ("11,cat dog smiley_face\n11,cat dog smiley_face\n", ["11", "22"], "duplicate"),
        ("11,cat dog smiley_face\n33,cat dog smiley_face\n", ["11", "22"], "unknown key_id"),
    ],
)
def test_validator_rejects_bad_files(tmp_path, body, expected, message):
    (tmp_path / "s.csv").write_text("key_id,word\n" + body)
    with pytest.raises(SubmissionError, match=message):
        validate_submission(tmp_path / "s.csv", expected, CLASSES)


def test_score_helper(tmp_path):
    (tmp_path / "s.csv").write_text(
        "key_id,word\n1,cat dog smiley_face\n2,cat dog smiley_face\n3,dog cat The_Eiffel_Tower\n"
    )
    (tmp_path / "l.csv").write_text("key_id,word\n1,cat\n2,smiley face\n3,horse\n")
    score, n = score_submission(tmp_path / "s.csv", tmp_path / "l.csv")
    assert n == 3 and score == pytest.approx((1 + 1 / 3 + 0) / 3)
    (tmp_path / "l.csv").write_text("key_id,word\n9,cat\n")
    with pytest.raises(SubmissionError, match="no prediction"):
        score_submission(tmp_path / "s.csv", tmp_path / "l.csv")


def test_score_cli_prints_map3_and_names_a_bad_path(tmp_path):
    """``python -m stages.score SUBMISSION LABELS`` as users run it: the score on stdout; a missing
    file is one ``error:`` line on stderr and exit status 2, not a traceback."""
    (tmp_path / "s.csv").write_text("key_id,word\n1,cat dog smiley_face\n2,cat dog smiley_face\n3,dog cat horse\n")
    (tmp_path / "l.csv").write_text("key_id,word\n1,cat\n2,smiley face\n3,cat\n")

    def score(*paths):
        cmd = [sys.executable, "-m", "stages.score", *map(str, paths)]
        return subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)

    ok = score(tmp_path / "s.csv", tmp_path / "l.csv")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"MAP@3 {(1 + 1 / 3 + 1 / 2) / 3:.5f} over 3 rows\n"  # 0.61111
    bad = score(tmp_path / "missing.csv", tmp_path / "l.csv")  # each run imports TensorFlow: one bad path is enough
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.csv" in lines[0], bad.stderr


def synthetic_model(seed, c, per, signal, skew=0.0):
    """Labels (per rows a class) and softmax scores with ``signal`` on the truth and ``skew`` on class 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(c), per)
    logits = rng.normal(0, 1, (len(labels), c))
    logits[np.arange(len(labels)), labels] += signal
    logits[:, 0] += skew
    return labels, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_balancing_evens_out_a_skewed_model_and_helps():
    c, per = 10, 200
    labels, probs = synthetic_model(0, c, per, 1.5, skew=1.2)  # the model over-predicts class 0
    before = np.bincount(probs.argmax(1), minlength=c)
    after = np.bincount(balance(probs).argmax(1), minlength=c)
    assert before.max() > 2 * per and np.abs(after - per).max() < np.abs(before - per).max() / 4
    assert map_at_3(labels, balance(probs)) > map_at_3(labels, probs)


def test_balancing_does_not_hurt_a_balanced_model():
    labels, probs = synthetic_model(1, 8, 150, 1.0)
    assert map_at_3(labels, balance(probs)) >= map_at_3(labels, probs) - 0.005


class FakeModel:
    """Scores depend on where the ink is, so flips and ensembles change the answer."""

    def __init__(self, bias):
        self.bias = np.asarray(bias, np.float32)
        self.output_shape = (None, 2)

    def __call__(self, images, training=False):
        x = np.asarray(images, np.float32)
        left = x[:, :, : x.shape[2] // 2].sum((1, 2, 3))
        right = x[:, :, x.shape[2] // 2 :].sum((1, 2, 3))
        p = np.stack([left, right], 1) + self.bias
        return p / p.sum(1, keepdims=True)


def test_tta_flip_and_ensemble_average():
    b = StrokeBatch.from_lists([[[[10, 60], [100, 100]]]])  # ink on the left
    r = RenderParams(size=32)
    m1 = TrainedModel("m1", FakeModel([1, 1]), ["l", "r"], r)
    m2 = TrainedModel("m2", FakeModel([500, 1]), ["l", "r"], r)
    plain = predict_probs([m1], b, 8, tta_flip=False)
    flipped = predict_probs([m1], b, 8, tta_flip=True)
    assert plain[0, 0] > 0.9 and flipped[0, 0] == pytest.approx(0.5, abs=0.01)  # symmetric after TTA
    both = predict_probs([m1, m2], b, 8, tta_flip=False)
    single2 = predict_probs([m2], b, 8, tta_flip=False)
    np.testing.assert_allclose(both, (plain + single2) / 2, rtol=1e-6)


def test_fast_weighted_top1_equals_the_full_argmax():
    from doodle.predict.submission import WeightedTop1

    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(60, 0.3), size=3000).astype(np.float32)
    probs[:50] = probs[50:100]  # duplicate rows
    probs[100, :] = 1 / 60  # a row of ties: the lowest class index must win
    top1 = WeightedTop1(probs, k=5, chunk_rows=700)
    for spread in (0.0, 0.5, 2.0, 5.0):  # the wider the weights, the more rows need a full recompute
        w = np.exp(rng.normal(size=60) * spread)
        assert np.array_equal(top1(w), (probs * w.astype(np.float32)).argmax(axis=1))


def test_balancing_never_leaves_counts_less_even_than_it_found_them():
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(6000, 30)) * 0.02  # near-uniform: an untrained model; steps overshoot
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    spread = lambda p: np.ptp(np.bincount(p.argmax(axis=1), minlength=30))  # noqa: E731
    assert spread(balance(probs)) <= spread(probs)
