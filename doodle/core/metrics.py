"""MAP@3, the competition metric, for offline scoring: a plain Python reference and a numpy version,
with no framework import (scoring a submission needs no TensorFlow). The same metric as a Keras
metric, for training, is in doodle.train.keras_metrics.

Ties in the scores are broken towards the lower class index, which is what ``top_k`` does and
what a stable descending sort does, so all of them agree.
"""

from __future__ import annotations

import numpy as np


def map_at_3_reference(actual: list, predicted: list[list]) -> float:
    """Plain-Python MAP@3 as Kaggle defines it for one true label per row."""
    total = 0.0
    for truth, guesses in zip(actual, predicted):
        for rank, guess in enumerate(guesses[:3]):
            if guess == truth:
                total += 1.0 / (rank + 1)
                break
    return total / len(actual) if actual else 0.0


def top_k(probs: np.ndarray, k: int = 3) -> np.ndarray:
    """Indices of the k largest scores per row, best first, ties to the lower index."""
    return np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]


def map_at_3(labels: np.ndarray, probs_or_top: np.ndarray) -> float:
    """MAP@3 of integer labels against probabilities (n, C) or ranked indices (n, >=3)."""
    top = probs_or_top if probs_or_top.dtype.kind in "iu" else top_k(probs_or_top, 3)
    hits = top[:, :3] == np.asarray(labels).reshape(-1, 1)
    return float((hits * np.array([1.0, 1 / 2, 1 / 3])).sum(axis=1).mean()) if len(hits) else 0.0


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    return float((top_k(probs, k) == np.asarray(labels).reshape(-1, 1)).any(axis=1).mean())
