"""Prediction with trained models: load a model with its metadata, render with the params it was
trained with, and average over models and test-time augmentation.

The render params come from the model's own metadata (written by the train stage from the
cache it trained on), so a test drawing is drawn exactly as its training drawings were.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .raster import RenderParams, render
from .strokes import StrokeBatch


@dataclass
class TrainedModel:
    path: Path
    model: object
    classes: list[str]
    render: RenderParams

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        import keras

        from . import metrics  # noqa: F401  (registers the custom loss/metric for loading)

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {path} (run the train stage first)")
        if not meta_path.is_file():
            raise FileNotFoundError(f"model metadata not found: {meta_path} (written by the train stage)")
        meta = json.loads(meta_path.read_text())
        return cls(path, keras.saving.load_model(path, compile=False), meta["classes"], RenderParams(**meta["render"]))


@dataclass
class Timing:
    render_s: float = 0.0
    model_s: float = 0.0
    extra: dict = field(default_factory=dict)


def predict_probs(
    models: list[TrainedModel], strokes: StrokeBatch, batch_size: int, tta_flip: bool, timing: Timing | None = None
) -> np.ndarray:
    """Mean class probabilities over ``models`` (and horizontal flips if ``tta_flip``)."""
    timing = timing or Timing()
    total = None
    rendered: dict[RenderParams, np.ndarray] = {}
    for m in models:
        t0 = time.perf_counter()
        if m.render not in rendered:  # members that share render params share the images
            rendered[m.render] = render(strokes, m.render)
        images = rendered[m.render]
        t1 = time.perf_counter()
        probs = _predict(m.model, images, batch_size)
        if tta_flip:
            probs = (probs + _predict(m.model, np.ascontiguousarray(images[:, :, ::-1]), batch_size)) / 2
        timing.render_s += t1 - t0
        timing.model_s += time.perf_counter() - t1
        total = probs if total is None else total + probs
    return total / len(models)


def _predict(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    out = []
    for a in range(0, len(images), batch_size):
        out.append(np.asarray(model(images[a : a + batch_size], training=False), np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)
