"""The input head and masked layers the stroke-sequence models share (``stroke_rnn``, ``stroke_conv1d``).

Their input is what :class:`doodle.drawing.sequence.SequenceParams` encodes: float32 ``(L, C)``
point rows, padding rows all zero, so the mask is ``state > 0`` (:data:`STATE_CHANNEL`). Keras
convolutions ignore masks, so after each convolution the padded positions are set back to 0
(:class:`ZeroMasked`): a "same"-padded convolution then sees zeros past the drawing's end whatever
``L`` is, and a drawing gives the same output padded to any length. Pooling counts valid steps only.

Small registered layers rather than ``Lambda``: a saved ``.keras`` model reloads them safely
(``keras.saving.load_model(path, compile=False)``, no ``safe_mode`` to turn off).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from doodle.drawing.sequence import STATE_CHANNEL

#: The error for image augmentation asked of a stroke model.
IMAGE_AUGMENT = "image augmentation (train.augment) does not apply to stroke models; use train.stroke_augment"


@keras.saving.register_keras_serializable(package="doodle")
class StrokeMask(layers.Layer):
    """``(B, L, C)`` point rows -> bool ``(B, L)``: True on real points (``state > 0``)."""

    def call(self, x):
        return ops.greater(x[..., STATE_CHANNEL], 0)


class _ExplicitMask(layers.Layer):
    """Takes the mask as an argument (``layer(x, valid)``) and passes no Keras mask on: an input
    carrying one (a masked LSTM's output) is accepted without Keras's "destroys the mask" warning."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, previous_mask=None):
        return None


def _weights(x, valid):
    """The bool mask ``valid`` ``(B, L)`` as ``(B, L, 1)`` in ``x``'s dtype."""
    return ops.expand_dims(ops.cast(valid, x.dtype), -1)


@keras.saving.register_keras_serializable(package="doodle")
class ZeroMasked(_ExplicitMask):
    """``x`` with the padding steps set to 0: ``layer(x, valid)``, ``valid`` the bool mask."""

    def call(self, x, valid):
        return x * _weights(x, valid)


@keras.saving.register_keras_serializable(package="doodle")
class MaskedMeanPool(_ExplicitMask):
    """``(B, L, F)`` -> ``(B, F)``: the mean over valid steps (0 for a drawing with none)."""

    def call(self, x, valid):
        w = _weights(x, valid)
        count = ops.maximum(ops.sum(w, axis=1), 1.0)
        return ops.sum(x * w, axis=1) / count


@keras.saving.register_keras_serializable(package="doodle")
class MaskedMaxPool(_ExplicitMask):
    """``(B, L, F)`` -> ``(B, F)``: the maximum over valid steps (0 for a drawing with none)."""

    def call(self, x, valid):
        lowest = ops.cast(-65000.0, x.dtype)  # within float16 range, below any activation here
        top = ops.max(ops.where(ops.expand_dims(valid, -1), x, lowest), axis=1)
        return ops.where(ops.any(valid, axis=1, keepdims=True), top, ops.zeros_like(top))


def stroke_input(input_shape, augment=None):
    """``(keras.Input "strokes", the input with its padding rows zeroed, its bool mask)`` for
    sequences of ``input_shape`` ``(L, C)``: what lies past the mask is never read. Refuses image
    augmentation (the stroke stream augments the strokes themselves)."""
    if augment is not None and augment.any():
        raise ValueError(IMAGE_AUGMENT)
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[1] <= STATE_CHANNEL:
        raise ValueError(f"a stroke model takes (points, channels) sequences with >= 3 channels, got {shape}")
    inputs = keras.Input(shape=shape, dtype="float32", name="strokes")
    mask = StrokeMask(name="mask")(inputs)
    return inputs, ZeroMasked(name="input_zero")(inputs, mask), mask
