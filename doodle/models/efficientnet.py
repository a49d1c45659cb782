"""EfficientNetV2-B0 from scratch: a stronger modern backbone (Keras' own rescaling is off:
the shared input head already maps pixels to [0, 1])."""

from __future__ import annotations

import keras

from .common import classifier, input_head


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x = input_head(input_shape, augment, seed)
    backbone = keras.applications.EfficientNetV2B0(
        input_shape=tuple(input_shape), weights=None, include_top=False, pooling="avg", include_preprocessing=False
    )
    return keras.Model(inputs, classifier(backbone(x), num_classes, dropout=0.2), name="efficientnet")
