"""MAP@3, the competition metric, for offline scoring: a plain Python reference and a numpy version,
with no framework import (scoring a submission needs no TensorFlow). The same metric as a Keras
metric, for training, is in doodle.train.keras_metrics.

Ties in the scores are broken towards the lower class index, which is what ``top_k`` does and
what a stable descending sort does, so all of them agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RANK_WEIGHTS = np.array([1.0, 1 / 2, 1 / 3])  # MAP@3's credit for the right class at rank 1, 2, 3


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
    return float((hits * RANK_WEIGHTS).sum(axis=1).mean()) if len(hits) else 0.0


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    return float((top_k(probs, k) == np.asarray(labels).reshape(-1, 1)).any(axis=1).mean())


def chance_map_at_3(num_classes: int) -> float:
    """MAP@3 of guessing three distinct classes at random: each rank holds the answer with
    probability 1/C, so (1 + 1/2 + 1/3) / C (0.0054 for Kaggle's 340 classes)."""
    return min(1.0, float(RANK_WEIGHTS[: max(num_classes, 1)].sum()) / max(num_classes, 1))


def near_chance(score: float, num_classes: int) -> bool:
    """A MAP@3 no better than twice chance, nor more than 0.1 above it (for a few classes twice
    chance is nearly perfect): the model has not learned, or its labels are scrambled."""
    chance = chance_map_at_3(num_classes)
    return num_classes > 1 and score <= min(2 * chance, chance + 0.1)


@dataclass
class StreamingScores:
    """MAP@3, top-1 and top-3 accuracy and cross-entropy over batches of (labels, probabilities),
    in memory that does not depend on the number of rows: what the train stage scores the whole
    validation split with, once, after training."""

    rows: int = 0
    rank_hits: np.ndarray = field(default_factory=lambda: np.zeros(3))  # right class at rank 1, 2, 3
    log_loss_sum: float = 0.0

    def add(self, labels: np.ndarray, probs: np.ndarray) -> None:
        labels = np.asarray(labels, np.int64)
        hits = top_k(probs, 3) == labels[:, None]
        self.rank_hits[: hits.shape[1]] += hits.sum(axis=0)
        true = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
        self.log_loss_sum += float(-np.log(np.clip(true, 1e-7, 1.0)).sum())
        self.rows += len(labels)

    def results(self, prefix: str = "val_") -> dict:
        """``{prefix}map_at_3``, ``accuracy``, ``top3``, ``loss`` (cross-entropy, no label smoothing), ``rows``."""
        n = max(self.rows, 1)
        return {
            f"{prefix}map_at_3": float(self.rank_hits @ RANK_WEIGHTS / n),
            f"{prefix}accuracy": float(self.rank_hits[0] / n),
            f"{prefix}top3": float(self.rank_hits.sum() / n),
            f"{prefix}loss": self.log_loss_sum / n,
            f"{prefix}rows": self.rows,
        }
