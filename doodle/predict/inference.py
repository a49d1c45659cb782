"""Prediction with trained models: load a model with its metadata, make its input with the encoder
it was trained with, and average over models (weighted) and test-time augmentation.

A model's input encoder comes from its own metadata (written by the train stage): the render params
of the cache it trained on for an image model, the ``train.sequence`` params for a stroke model
(:mod:`doodle.drawing.sequence`). So a test drawing is encoded exactly as its training drawings
were, by the same function; models of different kinds average together (each input is made once
per encoder). Test images of a pixel source (a Digit Recognizer ``test.csv``) are fitted to an
image model's render params as the training images were (:func:`doodle.drawing.images.fit_images`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doodle.core.params import ParamError
from doodle.drawing.images import fit_images
from doodle.drawing.parse import DRAWING_REASONS, parse_drawings
from doodle.drawing.raster import RenderParams
from doodle.drawing.sequence import SequenceParams, encoder_from_dict
from doodle.drawing.strokes import StrokeBatch
from doodle.sources.folder import SourceError
from doodle.sources.pixels import digit_header, iter_digit_rows
from doodle.sources.quickdraw import MALFORMED_ROW, iter_test_blocks


@dataclass
class TrainedModel:
    path: Path
    model: object
    classes: list[str]
    encoder: RenderParams | SequenceParams  # what makes its input from strokes

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        import keras

        from doodle.models import sequence_layers  # noqa: F401  (registers the stroke models' layers)

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {path} (run the train stage first)")
        if not meta_path.is_file():
            raise FileNotFoundError(f"model metadata not found: {meta_path} (written by the train stage)")
        meta = json.loads(meta_path.read_text())
        model = keras.saving.load_model(path, compile=False)
        return cls(path, model, meta["classes"], model_encoder(meta))


def model_encoder(meta: dict) -> RenderParams | SequenceParams:
    """The input encoder a model's metadata names: its ``input`` (kind and params, written by the
    train stage), or for a model written before stroke models existed, its ``render`` params."""
    spec = meta.get("input") or {"kind": RenderParams.kind, **meta["render"]}
    return encoder_from_dict(spec["kind"], spec)


@dataclass
class Timing:
    render_s: float = 0.0
    model_s: float = 0.0
    extra: dict = field(default_factory=dict)


def predict_probs(
    models: list[TrainedModel],
    strokes: StrokeBatch,
    batch_size: int,
    tta_flip: bool,
    timing: Timing | None = None,
    weights: list[float] | None = None,
) -> np.ndarray:
    """Mean class probabilities over ``models`` (weighted by ``weights``; None: equally), each fed
    ``strokes`` through its own encoder (and their mirror images if ``tta_flip``)."""
    return _mean_probs(models, lambda encoder: encoder.encode(strokes), batch_size, tta_flip, timing, weights)


def predict_images(
    models: list[TrainedModel],
    images: np.ndarray,
    batch_size: int,
    tta_flip: bool,
    timing: Timing | None = None,
    weights: list[float] | None = None,
) -> np.ndarray:
    """:func:`predict_probs` for pixel images (n, H, W), fitted to each model's render params."""
    for m in models:
        if not m.encoder.draws_images:
            raise ParamError(f"predict.models: {m.path} reads stroke sequences; this data set has pixel images only")
    return _mean_probs(models, lambda encoder: fit_images(images, encoder), batch_size, tta_flip, timing, weights)


def model_probs_of(model: TrainedModel, inputs: np.ndarray, batch_size: int, tta_flip: bool) -> np.ndarray:
    """``model``'s probabilities of its encoded ``inputs``, averaged with their mirror images' when
    ``tta_flip``: what one model contributes to a mean, at prediction and when blend weights are fitted."""
    probs = predict_in_batches(model.model, inputs, batch_size)
    if tta_flip:
        probs = (probs + predict_in_batches(model.model, model.encoder.mirror(inputs), batch_size)) / 2
    return probs


def _mean_probs(models: list[TrainedModel], encode, batch_size: int, tta_flip: bool, timing, weights):
    """The weighted mean of ``models``' probabilities of their inputs ``encode(encoder)`` (and
    their mirror images if ``tta_flip``); models that share an encoder share its input."""
    timing = timing or Timing()
    weights = np.full(len(models), 1.0 / len(models)) if weights is None else np.asarray(weights, np.float64)
    total = None
    encoded: dict = {}
    for m, w in zip(models, weights / weights.sum()):
        t0 = time.perf_counter()
        if m.encoder not in encoded:
            encoded[m.encoder] = encode(m.encoder)
        inputs = encoded[m.encoder]
        t1 = time.perf_counter()
        probs = model_probs_of(m, inputs, batch_size, tta_flip)
        timing.render_s += t1 - t0
        timing.model_s += time.perf_counter() - t1
        total = w * probs if total is None else total + w * probs
    return total.astype(np.float32)


def predict_in_batches(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``model``'s probabilities for ``images``, ``batch_size`` at a time (a direct call, not
    ``model.predict``, which sets up a data pipeline on every call)."""
    out = []
    for a in range(0, len(images), batch_size):
        out.append(np.asarray(model(images[a : a + batch_size], training=False), np.float32))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


@dataclass
class TestPredictions:
    """Probabilities for every row of a test file, in file order (a Kaggle submission needs one
    row per test key_id, so a broken test drawing is predicted from a blank image and counted)."""

    key_ids: list[str]
    probs: np.ndarray
    rejected: dict[str, int]  # reason -> rows predicted from a blank image

    @classmethod
    def gather(cls, keys: list, chunks: list[np.ndarray], rejected: dict[str, int], classes: int) -> TestPredictions:
        """The predictions of a file read block by block: its blocks' probabilities in order."""
        probs = np.concatenate(chunks) if chunks else np.zeros((0, classes), np.float32)
        return cls(keys, probs, rejected)


def predict_test_file(
    models: list[TrainedModel],
    path: str | Path,
    batch_size: int,
    tta_flip: bool,
    block_bytes: int = 4 << 20,
    timing: Timing | None = None,
    progress=None,
    weights: list[float] | None = None,
) -> TestPredictions:
    """Stream a ``test_simplified.csv`` block by block through :func:`predict_probs` (``weights``:
    each model's share of the mean, None for equal shares).

    A row whose drawing is malformed, and a line the CSV parser could not split (its key_id
    is the text before the first comma) still get a prediction, from a blank image. Repeated
    key_ids are an error naming them: Kaggle rejects a submission with repeated rows, and no
    choice of which repeat to keep would be right."""
    timing = timing or Timing()
    blank = StrokeBatch.from_lists([])
    keys: list[str] = []
    chunks, rejected = [], {}
    blocks = iter_test_blocks(path, block_bytes)

    def predict_bad_lines():
        bad = [line.split(",", 1)[0].strip() for line in blocks.take_bad_rows()]
        if bad:
            rejected[MALFORMED_ROW] = rejected.get(MALFORMED_ROW, 0) + len(bad)
            blanks = blank.expand(np.zeros(len(bad), bool))
            chunks.append(predict_probs(models, blanks, batch_size, False, timing, weights))
            keys.extend(bad)

    for table in blocks:
        parsed = parse_drawings(table["drawing"])
        for code, name in DRAWING_REASONS.items():
            if n := int((parsed.status == code).sum()):
                rejected[name] = rejected.get(name, 0) + n
        strokes = parsed.strokes.expand(parsed.valid)
        chunks.append(predict_probs(models, strokes, batch_size, tta_flip, timing, weights))
        keys.extend(k.strip() for k in table["key_id"].to_pylist())
        if progress is not None:
            progress(table.nbytes)
        predict_bad_lines()
    predict_bad_lines()  # lines of a block that had no good row
    repeated = _repeated(keys)
    if repeated:
        raise SourceError(
            f"{path}: {len(repeated)} key_id(s) appear more than once (e.g. {', '.join(repeated[:5])}); "
            "a submission needs one row per key_id"
        )
    return TestPredictions.gather(keys, chunks, rejected, len(models[0].classes))


def _repeated(keys: list[str]) -> list[str]:
    seen, repeated = set(), {}
    for k in keys:
        if k in seen:
            repeated[k] = None
        seen.add(k)
    return list(repeated)


def predict_digit_file(
    models: list[TrainedModel],
    path: str | Path,
    batch_size: int,
    tta_flip: bool,
    block_bytes: int = 4 << 20,
    timing: Timing | None = None,
    progress=None,
    weights: list[float] | None = None,
) -> TestPredictions:
    """Stream a Digit Recognizer ``test.csv`` block by block, in file order: ``key_ids`` are the
    ImageIds (the 1-based row numbers). A malformed row still gets a prediction, from a blank
    image, and is counted by reason, as a malformed test drawing is."""
    timing = timing or Timing()
    shape = digit_header(path, labelled=False)
    keys: list[int] = []
    chunks, rejected = [], {}
    for block in iter_digit_rows(path, False, shape, block_bytes):
        for reason in block.reason[~block.ok]:
            rejected[reason] = rejected.get(reason, 0) + 1
        chunks.append(predict_images(models, block.images, batch_size, tta_flip, timing, weights))
        keys.extend(block.key_id.tolist())
        if progress is not None:
            progress(block.nbytes)
    return TestPredictions.gather(keys, chunks, rejected, len(models[0].classes))
