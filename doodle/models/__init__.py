"""Model architectures, one module each, behind one registry: ``ARCHITECTURES`` and ``build_model(name, ...)``.

All are pure Keras 3 (``keras.layers``, ``keras.ops``), so they build under any backend. Each reads
the input of one encoder: :class:`doodle.drawing.raster.RenderParams` (uint8 pixels from the
rasterizer or the cache) or :class:`doodle.drawing.sequence.SequenceParams` (float32 point rows);
code that differs by input asks that encoder (``draws_images``, ``mirror``), never a name. The
registry imports no framework: a model's module (and Keras) is imported when it is built, so params
can be checked in a fraction of a second (``stages.check``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from doodle.drawing.raster import RenderParams
from doodle.drawing.sequence import SequenceParams

from .augment import AugmentParams


@dataclass(frozen=True)
class Architecture:
    """One registry entry: the model's name (``train.model``, and the module whose ``build`` makes it)
    and the encoder whose input it reads."""

    name: str
    encoder: type  # RenderParams or SequenceParams
    #: an image model's smallest input side: its pooling leaves nothing below (tests/models/test_architectures.py)
    min_size: int = 8

    @property
    def draws_images(self) -> bool:
        """Whether it reads drawn images (the render params), not point sequences."""
        return self.encoder.draws_images

    def build(self, *args, **kwargs):
        return importlib.import_module(f"{__name__}.{self.name}").build(*args, **kwargs)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("cnn", RenderParams, min_size=19),
        Architecture("seed_cnn", RenderParams, min_size=29),
        Architecture("mobilenet", RenderParams, min_size=32),
        Architecture("mlp", RenderParams),
        Architecture("efficientnet", RenderParams, min_size=32),
        Architecture("stroke_rnn", SequenceParams),
        Architecture("stroke_conv1d", SequenceParams),
    )
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def reads_images(name: str) -> bool:
    """Whether model ``name`` reads drawn images (its encoder is the rasterizer's params)."""
    return architecture(name).draws_images


def build_model(
    name: str, input_shape, num_classes: int, width: float = 1.0, augment: AugmentParams | None = None, seed: int = 0
):
    return architecture(name).build(input_shape, num_classes, width=width, augment=augment, seed=seed)


__all__ = ["ARCHITECTURES", "Architecture", "AugmentParams", "architecture", "build_model", "reads_images"]
