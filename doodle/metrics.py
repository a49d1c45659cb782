"""MAP@3, the competition metric, written once in ``keras.ops`` (any backend), with a plain
Python reference and a numpy version for offline scoring.

Ties in the scores are broken towards the lower class index, which is what ``top_k`` does and
what a stable descending sort does, so all three agree.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def map_at_3_per_sample(y_true, y_pred):
    """1, 1/2, 1/3 or 0 per sample: the reciprocal rank of the true class within the top 3."""
    _, top = ops.top_k(y_pred, k=3)
    y = ops.reshape(ops.cast(y_true, top.dtype), (-1, 1))
    hits = ops.cast(ops.equal(top, y), "float32")
    return ops.sum(hits * ops.convert_to_tensor([1.0, 1.0 / 2.0, 1.0 / 3.0]), axis=-1)


@keras.saving.register_keras_serializable(package="doodle")
class MapAt3(keras.metrics.MeanMetricWrapper):
    def __init__(self, name="map_at_3", dtype=None):
        super().__init__(fn=map_at_3_per_sample, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="doodle")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing (Keras' sparse loss has none)."""

    def __init__(self, smoothing: float = 0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)
        logp = ops.log(y_pred)
        n = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), n)
        target = onehot * (1.0 - self.smoothing) + self.smoothing / ops.cast(n, "float32")
        return -ops.sum(target * logp, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


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
