"""Model architectures, one module each, behind one registry: ``ARCHITECTURES`` and ``build_model(name, ...)``.

All are pure Keras 3 (``keras.layers``, ``keras.ops``), so they build under any backend. Each takes
one kind of input: "image" (uint8 pixels from the rasterizer or the cache) or "sequence" (float32
point rows from :class:`doodle.drawing.sequence.SequenceParams`), the ``kind`` of the encoder that
feeds it. The registry imports no framework: a model's module (and Keras) is imported when it is
built, so params can be checked in a fraction of a second (``stages.check``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .augment import AugmentParams


@dataclass(frozen=True)
class Architecture:
    """One registry entry: the module whose ``build`` makes the model, and the input it takes."""

    module: str
    input_kind: str  # "image" | "sequence": the ``kind`` of the encoder that feeds it

    def build(self, *args, **kwargs):
        return importlib.import_module(f"{__name__}.{self.module}").build(*args, **kwargs)


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture("cnn", "image"),
    "seed_cnn": Architecture("seed_cnn", "image"),
    "mobilenet": Architecture("mobilenet", "image"),
    "mlp": Architecture("mlp", "image"),
    "efficientnet": Architecture("efficientnet", "image"),
    "stroke_rnn": Architecture("stroke_rnn", "sequence"),
    "stroke_conv1d": Architecture("stroke_conv1d", "sequence"),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def input_kind(name: str) -> str:
    """What architecture ``name`` takes: "image" or "sequence"."""
    return architecture(name).input_kind


def build_model(
    name: str, input_shape, num_classes: int, width: float = 1.0, augment: AugmentParams | None = None, seed: int = 0
):
    return architecture(name).build(input_shape, num_classes, width=width, augment=augment, seed=seed)


__all__ = ["ARCHITECTURES", "Architecture", "AugmentParams", "architecture", "build_model", "input_kind"]
