"""Blend weights for models of different kinds, fitted on the validation shards (``predict.weights: fit``).

An image CNN and a stroke-sequence model make different mistakes, so a weighted mean of their
probabilities beats either; how much each should weigh depends on how good each is, which only
held-out drawings can say. The fit is deliberately simple, so that it cannot overfit a few thousand
validation drawings: the weights are a grid on the simplex (steps of :data:`STEP`, so 21 candidates
for two models, 231 for three), scored by MAP@3 of the weighted mean on the first
``predict.fit_rows`` drawings of the validation shards (a uniform sample: the shards are shuffled),
each model fed through its own encoder. The best is kept; among equal scores, the most even
weights. With more than three models, coordinate ascent from equal weights over the same grid.
Never fitted on the test set: its labels are not read.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from doodle.core.metrics import map_at_3
from doodle.core.params import ParamError
from doodle.drawing.strokes import StrokeBatch
from doodle.shard.format import iter_shard_batches, split_shards

from .inference import TrainedModel, model_probs_of

STEP = 0.05  # grid step of the weights
GRID_MODELS = 3  # up to this many models, every grid point is scored


def validation_rows(shards_dir: Path, manifest: dict, rows: int):
    """(strokes, labels) of the first ``rows`` drawings of the validation shards, in shard order: a
    StrokeBatch per row group, read as the render stage reads shards (``iter_shard_batches``)."""
    if manifest.get("content") == "images":
        raise ParamError(
            "predict.weights: fit scores the models on the validation shards' strokes, but these shards hold "
            f"images ({manifest.get('source_kind')} source): give the weights as a list"
        )
    batches, labels, left = [], [], rows
    for i in split_shards(manifest, "val", None):
        for group_labels, _, strokes in iter_shard_batches(shards_dir / manifest["files"][i], limit=left):
            batches.append(strokes)
            labels.append(group_labels)
            left -= len(group_labels)
        if left <= 0:
            break
    if not batches:
        raise ParamError("predict.weights: fit needs validation shards (shard.val_shards) with drawings")
    return batches, np.concatenate(labels)


def check_held_out(models: list[TrainedModel], metas: list[dict], manifest: dict) -> None:
    """Refuse to fit on shards a model trained on: an ensemble member's metadata names the shards it
    never trained on, which must include the validation shards."""
    val = set(manifest["val_shards"])
    for m, meta in zip(models, metas):
        held = meta.get("member", {}).get("val_shards")
        if held is not None and not val <= set(held):
            raise ParamError(
                f"predict.weights: fit scores on the validation shards {sorted(val)}, but {m.path} trained on "
                f"some of them (it held out {held}); set the weights by hand or blend models of one holdout"
            )


def model_probs(
    models: list[TrainedModel], batches: list[StrokeBatch], batch_size: int, tta_flip: bool = False
) -> list[np.ndarray]:
    """Each model's probabilities of the drawings ``batches``, through its own encoder (one input
    per distinct encoder), and averaged with their mirror images' when ``tta_flip``: the
    probabilities the weights will be applied to at prediction."""
    encoded: dict = {}
    out = []
    for m in models:
        if m.encoder not in encoded:
            encoded[m.encoder] = [m.encoder.encode(b) for b in batches]
        out.append(np.concatenate([model_probs_of(m, x, batch_size, tta_flip) for x in encoded[m.encoder]]))
    return out


def candidates(n: int, step: float = STEP):
    """Every weight vector of ``n`` models on the grid of ``step`` that sums to 1."""
    ticks = round(1 / step)
    for head in itertools.product(range(ticks + 1), repeat=n - 1):
        if sum(head) <= ticks:
            yield np.array([*head, ticks - sum(head)], np.float64) / ticks


def fit_weights(probs: list[np.ndarray], labels: np.ndarray, step: float = STEP) -> tuple[np.ndarray, float]:
    """(weights, MAP@3) of the best weighted mean of ``probs`` on ``labels`` (see the module doc)."""
    n = len(probs)

    def score(w):
        return map_at_3(labels, sum(wi * p for wi, p in zip(w, probs)))

    def better(s, w, best_s, best_w):  # higher score; on a tie, the more even weights
        return s > best_s + 1e-12 or (abs(s - best_s) <= 1e-12 and np.ptp(w) < np.ptp(best_w))

    best_w = np.full(n, 1.0 / n)
    best_s = score(best_w)
    if n <= GRID_MODELS:
        for w in candidates(n, step):
            s = score(w)
            if better(s, w, best_s, best_w):
                best_s, best_w = s, w
        return best_w, best_s
    improved = True
    while improved:  # coordinate ascent: move weight between two models a step at a time
        improved = False
        for i, j in itertools.permutations(range(n), 2):
            w = best_w.copy()
            shift = min(step, w[j])
            w[i], w[j] = w[i] + shift, w[j] - shift
            s = score(w)
            if shift > 0 and s > best_s + 1e-12:
                best_s, best_w, improved = s, w, True
    return best_w, best_s
