"""The Quick Draw mini-project's final custom CNN, as published (``cnn`` is a slimmer variant).

Three blocks, each zero padding, two 3x3 convs and 2x2 max pooling with dropout 0.25: 128/128
(the first conv strided, with BatchNorm after it), 256/256, 512/512; then a 2x2 conv to 1024,
dropout, Flatten, dropout 0.5 and the softmax: 8.1M parameters at 64 px and 340 classes. Pooling
keeps odd edges ("same"), so the network also builds at 32 px, where the blocks end at 1x1.
``width`` scales the filters (1.0 is the published network).
"""

from __future__ import annotations

import keras
from keras import layers

from .common import classifier, input_head


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x = input_head(input_shape, augment, seed)

    def f(n: int) -> int:
        return max(8, int(n * width))

    for block, filters in enumerate((128, 256, 512)):
        x = layers.ZeroPadding2D(1, name=f"pad{block + 1}")(x)
        if block == 0:
            x = layers.Conv2D(f(filters), 3, strides=2, activation="relu", name="conv1a")(x)
            x = layers.BatchNormalization(name="bn1")(x)
        else:
            x = layers.Conv2D(f(filters), 3, activation="relu", name=f"conv{block + 1}a")(x)
        x = layers.Conv2D(f(filters), 3, activation="relu", name=f"conv{block + 1}b")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{block + 1}")(x)
        x = layers.Dropout(0.25, name=f"drop{block + 1}")(x)
    x = layers.Conv2D(f(1024), min(2, x.shape[1]), activation="relu", name="conv4")(x)
    x = layers.Dropout(0.25, name="drop4")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, classifier(x, num_classes, dropout=0.5), name="seed_cnn")
