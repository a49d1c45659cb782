"""The custom CNN of the Quick Draw mini-project: ~4-5M parameters at width 1.

A strided first conv, then zero-padded 3x3 conv blocks of 128/256/512 filters with max pooling
and dropout 0.25, a 2x2 conv to 1024, dropout 0.5 and a softmax. ``width`` scales the filters
(0.25 trains ~16x faster and suits small images and CPUs).
"""

from __future__ import annotations

import keras
from keras import layers

from .common import classifier, input_head


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x = input_head(input_shape, augment, seed)
    f = lambda n: max(8, int(n * width))  # noqa: E731
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(f(128), 3, strides=2, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    for filters in (256, 512):
        x = layers.ZeroPadding2D(1)(x)
        x = layers.Conv2D(f(filters), 3, activation="relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
        x = layers.Dropout(0.25)(x)
    x = layers.ZeroPadding2D((0, 1) if x.shape[1] < 2 else 0)(x)
    x = layers.Conv2D(f(1024), 2, activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout=0.5), name="cnn")
