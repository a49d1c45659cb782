"""A recurrent model of the stroke sequence, after the TensorFlow Quick Draw RNN tutorial.

Three 1D convolutions (48, 64 and 96 filters, kernels 5, 5 and 3, "same" padding) over the point
rows (:mod:`doodle.drawing.sequence`), then three bidirectional LSTM layers of 128 units a direction,
with dropout 0.3 between them, masked to the drawing's points; the LSTM outputs are averaged over
the valid steps and a softmax classifies. ``width`` scales filters and units (at least 8).

Differences from the tutorial: the convolutions use relu (the tutorial's are linear, so its stack
is one linear filter), and the pooling is a masked mean rather than a masked sum (the sum grows
with the number of points). Padded steps are zeroed after each convolution, so a drawing gives
the same output whatever the sequence length it is padded to (see :mod:`.sequence_layers`).
"""

from __future__ import annotations

import keras
from keras import layers

from .common import classifier
from .sequence_layers import MaskedMeanPool, ZeroMasked, stroke_input

CONVS = ((48, 5), (64, 5), (96, 3))
LSTM_UNITS = 128
LSTM_LAYERS = 3


def build(input_shape, num_classes: int, width: float = 1.0, augment=None, seed: int = 0) -> keras.Model:
    inputs, x, mask = stroke_input(input_shape, augment)
    f = lambda n: max(8, int(n * width))  # noqa: E731
    for i, (filters, kernel) in enumerate(CONVS):
        x = layers.Conv1D(f(filters), kernel, padding="same", activation="relu", name=f"conv{i}")(x)
        x = ZeroMasked(name=f"conv{i}_zero")(x, mask)
    for i in range(LSTM_LAYERS):
        if i:
            x = layers.Dropout(0.3, seed=seed + i, name=f"lstm{i}_dropout")(x)
        lstm = layers.LSTM(f(LSTM_UNITS), return_sequences=True, seed=seed + i)
        x = layers.Bidirectional(lstm, name=f"lstm{i}")(x, mask=mask)
        x = ZeroMasked(name=f"lstm{i}_zero")(x, mask)
    x = MaskedMeanPool(name="mean")(x, mask)
    return keras.Model(inputs, classifier(x, num_classes), name="stroke_rnn")
