"""A small fully connected baseline (flatten, two hidden layers), as in the QuickDraw-10 notebook."""

from __future__ import annotations

import keras
from keras import layers

from .common import classifier, input_head


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x = input_head(input_shape, augment, seed)
    x = layers.Flatten()(x)
    x = layers.Dense(int(512 * width), activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(int(256 * width), activation="relu")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout=0.2), name="mlp")
