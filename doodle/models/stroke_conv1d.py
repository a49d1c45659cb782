"""An all-convolutional model of the stroke sequence: faster than :mod:`.stroke_rnn` (no recurrence).

In the style of the Kaggle Quick Draw 1D-CNN kernels: blocks of two "same"-padded 1D convolutions
(64, 128, 256 filters; kernels 5 then 3) with batch normalisation and relu over the point rows
(:mod:`doodle.drawing.sequence`), padded steps zeroed after each convolution. Block ``b`` dilates its
convolutions by ``2 ** b``, so the last block sees 43 consecutive points (a typical simplified drawing
has 30-60) where undilated ones would see 19, at the same cost; then the masked global
maximum and masked mean over the drawing's points, concatenated, a dense layer of 512 with
dropout 0.3, and a softmax. ``width`` scales the filters and the dense layer (at least 8).
Pooling ignores padding and convolutions see zeros past the end, so a drawing gives the same
output whatever length it is padded to (see :mod:`.sequence_layers`).
"""

from __future__ import annotations

import keras
from keras import layers

from .common import classifier
from .sequence_layers import MaskedMaxPool, MaskedMeanPool, ZeroMasked, stroke_input

BLOCKS = (64, 128, 256)
KERNELS = (5, 3)
DILATION = 2  # block b's convolutions skip 2**b - 1 points between taps


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x, mask = stroke_input(input_shape, augment)
    f = lambda n: max(8, int(n * width))  # noqa: E731
    for b, filters in enumerate(BLOCKS):
        for k, kernel in enumerate(KERNELS):
            conv = layers.Conv1D(
                f(filters), kernel, padding="same", dilation_rate=DILATION**b, use_bias=False, name=f"block{b}_conv{k}"
            )
            x = conv(x)
            x = layers.BatchNormalization(name=f"block{b}_bn{k}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu{k}")(x)
            x = ZeroMasked(name=f"block{b}_zero{k}")(x, mask)  # batch norm makes padding nonzero
    pooled = layers.Concatenate(name="pool")([MaskedMaxPool(name="max")(x, mask), MaskedMeanPool(name="mean")(x, mask)])
    x = layers.Dense(f(512), activation="relu", name="dense")(pooled)
    x = layers.Dropout(0.3, seed=seed, name="dense_dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes), name="stroke_conv1d")
