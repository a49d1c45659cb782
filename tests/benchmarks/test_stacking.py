"""benchmarks.stacking: the models' validation probabilities read back from their out-of-fold files,
and a stacker measured against the weighted blend by cross-validation, every drawing scored by a
method fitted without it."""

from __future__ import annotations

import numpy as np

from benchmarks.stacking import cross_validate
from doodle.core.metrics import map_at_3
from doodle.train.folds import read_oof
from tests.conftest import write_oof


def test_out_of_fold_files_read_back_as_probabilities_sorted_by_key(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.permutation(1000)[:40].astype(np.int64)
    labels = rng.integers(0, 6, 40)
    probs = rng.dirichlet(np.ones(6), 40)
    write_oof(tmp_path / "oof.parquet", keys, labels, probs)
    k, y, p = read_oof(tmp_path / "oof.parquet")
    order = np.argsort(keys)
    assert np.array_equal(k, keys[order]) and np.array_equal(y, labels[order])
    np.testing.assert_allclose(p, probs[order], rtol=1e-6)


def test_the_stacker_learns_what_a_weighted_mean_cannot():
    """Model B is sure and right, but names every class by another's index (a permutation): a weighted
    mean of probabilities cannot use it, a stacker on the log-probabilities learns the mapping."""
    rng = np.random.default_rng(1)
    n, classes = 500, 5
    labels = rng.integers(0, classes, n)
    noisy = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))  # model A: right 60% and more
    a = np.full((n, classes), 0.1)
    a[np.arange(n), noisy] = 0.6
    permutation = np.array([3, 0, 4, 1, 2])
    b = np.full((n, classes), 0.02)
    b[np.arange(n), permutation[labels]] = 0.92
    result = cross_validate([a, b], labels, folds=5)
    assert result["blend"] < 0.9 and result["blend"] >= map_at_3(labels, a) - 0.02
    assert result["stacker"] > 0.99
    assert set(result["stacker_c"]) <= {0.01, 0.1, 1.0, 10.0} and len(result["stacker_c"]) == 5
