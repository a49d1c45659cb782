"""MobileNet (v1) from scratch: the public baseline's model (``width`` is MobileNet's alpha)."""

from __future__ import annotations

import keras

from .common import classifier, input_head


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x = input_head(input_shape, augment, seed)
    backbone = keras.applications.MobileNet(
        input_shape=tuple(input_shape), alpha=width, weights=None, include_top=False, pooling="avg"
    )
    return keras.Model(inputs, classifier(backbone(x), num_classes, dropout=0.001), name="mobilenet")
