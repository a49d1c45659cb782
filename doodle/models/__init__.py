"""Model architectures, one module each, behind one builder: ``build_model(name, ...)``.

All are pure Keras 3 (``keras.layers``, ``keras.ops``), so they build under any backend. Each takes
one kind of input (:data:`INPUT_KINDS`): "image" (uint8 pixels from the rasterizer or the cache) or
"sequence" (float32 point rows from :class:`doodle.drawing.sequence.SequenceParams`), the ``kind`` of
the encoder that feeds it.
"""

from __future__ import annotations

from . import cnn, efficientnet, mlp, mobilenet, seed_cnn, stroke_conv1d, stroke_rnn
from .common import AugmentParams

ARCHITECTURES = {
    "cnn": cnn.build,
    "seed_cnn": seed_cnn.build,
    "mobilenet": mobilenet.build,
    "mlp": mlp.build,
    "efficientnet": efficientnet.build,
    "stroke_rnn": stroke_rnn.build,
    "stroke_conv1d": stroke_conv1d.build,
}

#: Every architecture's input: "image" or "sequence" (an encoder's ``kind``).
INPUT_KINDS: dict[str, str] = {
    "cnn": "image",
    "seed_cnn": "image",
    "mobilenet": "image",
    "mlp": "image",
    "efficientnet": "image",
    "stroke_rnn": "sequence",
    "stroke_conv1d": "sequence",
}


def input_kind(name: str) -> str:
    """What architecture ``name`` takes: "image" or "sequence"."""
    if name not in INPUT_KINDS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return INPUT_KINDS[name]


def build_model(
    name: str, input_shape, num_classes: int, width: float = 1.0, augment: AugmentParams | None = None, seed: int = 0
):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](input_shape, num_classes, width=width, augment=augment, seed=seed)


__all__ = ["ARCHITECTURES", "INPUT_KINDS", "AugmentParams", "build_model", "input_kind"]
