"""What the network sees: a 2-D embedding of its penultimate features and its first conv activations.

Two reports of the evaluate stage, for any architecture in doodle.models, any class count and 1 or
3 image channels:

- ``embedding.png``: the features the classifier's last (Dense) layer reads, for the first
  ``evaluate.embedding_samples`` validation images (a uniform sample: the cache's shards are
  shuffled), projected to 2-D with t-SNE (scikit-learn) or PCA and coloured by true class. Classes
  the network separates form separate clusters; mistakes (marked x) sit where classes meet. Only
  the sample's features are kept (batch by batch into one array), so memory does not depend on the
  size of the validation split.
  Features without spread (a model that has not learned answers the same vector for every
  drawing) or with NaN/inf (diverged weights) are not projected: the picture says why instead.
  scikit-learn's t-SNE divides by the spread of its PCA start and then crashes its compiled code
  on the NaN (scikit-learn issue 28368), so the start is computed here, from the spread checked.
- ``activations.png``: for ``evaluate.activation_images`` validation images of different classes,
  the first ACTIVATION_CHANNELS channels of each of the first ACTIVATION_LAYERS Conv2D layers,
  found in graph order, inside a nested backbone (MobileNet, EfficientNet) too. A model without
  a conv layer (mlp) gets a picture saying so, so the stage's declared outputs always exist.

Sub-models are plain Keras (``keras.Model(inputs, [layer outputs])``), sharing the trained weights.
Both views are optional: an error in one is logged and its picture says so (doodle.core.plots.guarded), so
the evaluate stage, whose metrics are written before them, always completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle.core.plots import activation_grid, guarded, message_figure, scatter_by_class

from .params import EvaluateParams

log = logging.getLogger(__name__)

ACTIVATION_LAYERS = 3  # the first Conv2D layers shown
ACTIVATION_CHANNELS = 8  # channels shown per layer
PCA_BEFORE_TSNE = 50  # t-SNE runs on the top principal components (the usual practice: less noise, faster)
TSNE_ITERATIONS = 500  # a settled picture of a few thousand points; 1,000 cost 32 CPU-s against 22 (2,000 points)
TSNE_START_SPREAD = 1e-4  # the std of t-SNE's first start coordinate, as scikit-learn's own init="pca" sets it
NO_SPREAD = 1e-6  # features whose largest per-dimension std is below this share of their magnitude are constant


@dataclass
class Embedding:
    points: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n,) true classes
    predicted: np.ndarray  # (n,) top-1 classes
    method: str  # as the plot names it: "t-SNE" or "PCA"
    seconds: float  # time of the projection alone
    skipped: str | None = None  # why the features were not projected (points is then empty)


def feature_model(model):
    """images -> (penultimate features, class probabilities): the input of the last layer (the
    Dense classifier of every doodle.models architecture) and the model's output."""
    import keras

    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"model {model.name!r} does not end in a Dense layer (it ends in {type(head).__name__})")
    return keras.Model(model.input, [head.input, model.output])


def conv_model(model, layers: int = ACTIVATION_LAYERS):
    """images -> the outputs of the first ``layers`` Conv2D layers (graph order, looking inside nested
    models), with their names; (None, []) when the model has no Conv2D layer."""
    import keras

    taps, names = [], []
    for tensor, name in _conv_outputs(model, None):
        taps.append(tensor)
        names.append(name)
        if len(taps) == layers:
            break
    if not taps:
        return None, []
    return keras.Model(model.input, taps), names


def _conv_outputs(model, outer_input) -> Iterator[tuple[object, str]]:
    """(symbolic output, name) of every Conv2D of ``model`` in graph order. For a nested model,
    ``outer_input`` is the tensor it was called on in the enclosing graph: its conv outputs are
    re-wired onto it through a sub-model (same weights), so one keras.Model reaches them all."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            if outer_input is None:
                yield layer.output, layer.name
            else:  # inside a nested model: its own graph, re-applied to the enclosing tensor
                yield keras.Model(model.input, layer.output)(outer_input), layer.name
        elif isinstance(layer, keras.Model):
            # the tensor the nested model was called on, in this graph (Keras keeps it on the call's node;
            # a nested model's own .input is its private Input)
            called_on = layer._inbound_nodes[0].input_tensors[0]
            if outer_input is not None:
                called_on = keras.Model(model.input, called_on)(outer_input)
            yield from _conv_outputs(layer, called_on)


def unembeddable(features: np.ndarray) -> str | None:
    """Why ``features`` (n, d) have nothing to show in 2-D, or None: NaN or inf values (diverged
    weights), or no spread (every drawing gets the same vector: a model that has not learned)."""
    x = np.asarray(features, np.float64)
    if not np.isfinite(x).all():
        return "features are NaN or infinite: the model's weights have diverged"
    spread = float(x.std(axis=0).max()) if len(x) else 0.0
    if spread <= NO_SPREAD * float(np.abs(x).max(initial=0.0)) or spread == 0.0:
        return "features have no variance: the model has not learned"
    return None


def embed(features: np.ndarray, method: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, d) features -> ((n, 2) points, the method's name). t-SNE falls back to PCA, with a log
    line, for fewer than 10 points, without scikit-learn, or when it returns non-finite points.
    Callers check :func:`unembeddable` first: features without spread have no picture."""
    x = np.asarray(features, np.float64)
    if method == "tsne" and len(x) >= 10:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            log.warning("embedding: scikit-learn is not installed; PCA instead of t-SNE")
        else:
            log.info("embedding: t-SNE of %d points (~20 s for 2,000 on 2 CPU cores)", len(x))
            reduced = _pca(x, min(PCA_BEFORE_TSNE, *x.shape))
            tsne = TSNE(
                2,
                perplexity=min(30.0, (len(x) - 1) / 3),
                init=_tsne_start(reduced),
                max_iter=TSNE_ITERATIONS,
                random_state=seed,
            )
            points = tsne.fit_transform(reduced)
            if np.isfinite(points).all():
                return points, "t-SNE"
            log.warning("embedding: t-SNE returned non-finite points; PCA instead")
    elif method == "tsne":
        log.info("embedding: %d points are too few for t-SNE; PCA instead", len(x))
    return _pca(x, 2), "PCA"


def _tsne_start(reduced: np.ndarray) -> np.ndarray:
    """t-SNE's start: the first two principal components scaled so the first has std
    TSNE_START_SPREAD, as ``init="pca"`` does, but never dividing by a zero spread (the first
    component's std is > 0 for features :func:`unembeddable` accepts; a second one may be 0)."""
    start = np.zeros((len(reduced), 2))
    start[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    spread = float(start[:, 0].std())
    return (start / spread * TSNE_START_SPREAD if spread > 0 else start).astype(np.float32)


def _pca(x: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal component scores of ``x`` (zero columns where there are fewer);
    signs fixed so each component's largest loading is positive (deterministic)."""
    centred = x - x.mean(axis=0) if len(x) else x
    out = np.zeros((len(x), k))
    if len(x) < 2:
        return out
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    k_have = min(k, len(s))
    signs = np.sign(vt[np.arange(k_have), np.abs(vt[:k_have]).argmax(axis=1)])
    out[:, :k_have] = u[:, :k_have] * s[:k_have] * np.where(signs == 0, 1, signs)
    return out


def sample_views(model, batches, samples: int, images_wanted: int, method: str, seed: int = 0):
    """Read ``batches`` ((images, labels) in cache order) until ``samples`` rows; return the
    Embedding of their features and up to ``images_wanted`` (image, label) pairs of distinct
    classes (the first of each, topped up with the next images when there are fewer classes)."""
    import keras

    features_of = feature_model(model)
    features = labels = predicted = None
    picked: list[tuple[np.ndarray, int]] = []
    spare: list[tuple[np.ndarray, int]] = []
    done = 0
    for images, batch_labels in batches:
        take = min(len(batch_labels), samples - done)
        if not take:
            continue
        images, batch_labels = images[:take], np.asarray(batch_labels[:take], np.int64)
        feats, probs = (keras.ops.convert_to_numpy(t) for t in features_of(images, training=False))
        if features is None:
            features = np.zeros((samples, int(np.prod(feats.shape[1:]))), np.float32)
            labels, predicted = np.zeros(samples, np.int64), np.zeros(samples, np.int64)
        features[done : done + take] = feats.reshape(take, -1)
        labels[done : done + take] = batch_labels
        predicted[done : done + take] = probs.argmax(axis=1)
        for image, label in zip(images, batch_labels.tolist()):
            if len(picked) < images_wanted and label not in {lab for _, lab in picked}:
                picked.append((np.array(image), label))
            elif len(spare) < images_wanted:
                spare.append((np.array(image), label))
        done += take
        if done == samples:  # read no further batch
            break
    if features is None:
        return Embedding(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0, np.int64), "PCA", 0.0), []
    examples = (picked + spare)[:images_wanted]
    skipped = unembeddable(features[:done])
    if skipped:
        log.warning("embedding skipped: %s", skipped)
        return Embedding(np.zeros((0, 2)), labels[:done], predicted[:done], "none", 0.0, skipped), examples
    t0 = time.perf_counter()
    points, name = embed(features[:done], method, seed)
    return Embedding(points, labels[:done], predicted[:done], name, time.perf_counter() - t0), examples


def write_views(model, batches, classes: list[str], params: EvaluateParams, reports: Path, seed: int = 0) -> dict:
    """Write ``reports``/embedding.png and ``reports``/activations.png; return a summary. Each
    view is guarded (doodle.core.plots.guarded): whatever goes wrong in one, both files exist afterwards."""
    embedding, examples = Embedding(np.zeros((0, 2)), np.zeros(0), np.zeros(0), "none", 0.0), []

    def draw_embedding() -> None:
        nonlocal embedding, examples
        embedding, examples = sample_views(
            model, batches, params.embedding_samples, params.activation_images, params.embedding, seed
        )
        _draw_embedding(embedding, classes, reports / "embedding.png")

    guarded("embedding", reports / "embedding.png", draw_embedding)
    draw_activations = lambda: _draw_activations(model, examples, classes, reports)  # noqa: E731
    names = guarded("activations", reports / "activations.png", draw_activations)
    return {
        "embedding": embedding.method,
        "embedding_points": len(embedding.points),
        "embedding_seconds": round(embedding.seconds, 2),
        "embedding_skipped": embedding.skipped,
        "activation_layers": len(names or []),
        "activation_images": len(examples) if names else 0,
    }


def _draw_embedding(embedding: Embedding, classes: list[str], path: Path) -> None:
    n = len(embedding.points)
    if embedding.skipped:
        message_figure(f"no embedding: {embedding.skipped}", path)
    elif n:
        scatter_by_class(
            embedding.points,
            embedding.labels,
            embedding.predicted,
            classes,
            path,
            f"{embedding.method} of penultimate-layer features: {n:,} validation images, "
            f"{len(np.unique(embedding.labels))} classes (x = misclassified)",
        )
    else:
        message_figure("no validation images: no embedding", path)


def _draw_activations(model, examples: list, classes: list[str], reports: Path) -> list[str]:
    """activations.png for ``examples``; the names of the conv layers shown ([] for none)."""
    import keras

    path = reports / "activations.png"
    taps, names = conv_model(model)
    if taps is None:
        log.info("activations: model %r has no Conv2D layer; %s says so", model.name, path)
        message_figure(f"model {model.name!r} has no Conv2D layer: no activation maps", path)
    elif not examples:
        message_figure("no validation images: no activation maps", path)
    else:
        images = np.stack([image for image, _ in examples])
        maps = taps(images, training=False)
        maps = [keras.ops.convert_to_numpy(m).astype(np.float32) for m in (maps if isinstance(maps, list) else [maps])]
        activation_grid(
            images,
            [classes[label] for _, label in examples],
            [m[..., :ACTIVATION_CHANNELS] for m in maps],
            [f"{name} ({'x'.join(str(d) for d in m.shape[1:])})" for name, m in zip(names, maps)],
            path,
            title=f"activations of the first {len(maps)} conv layers of {model.name!r} (first channels)",
        )
    return names
