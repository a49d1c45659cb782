"""The input head every architecture shares: uint8 pixels in, rescale, optional augmentation.

Rescaling and augmentation live inside the model, so they run on the accelerator on whole
batches, the cached uint8 arrays feed the model as they are, and a saved model needs no
separate preprocessing at prediction time (augmentation layers are inactive outside training).
"""

from __future__ import annotations

import keras
from keras import layers

from .augment import AugmentParams


def input_head(input_shape, augment: AugmentParams | None = None, seed: int = 0):
    """Returns (keras.Input of uint8, float tensor in [0, 1], augmented if asked)."""
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    a = augment or AugmentParams()
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    if a.flip:
        x = layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(x)
    if a.shift:
        x = layers.RandomTranslation(a.shift, a.shift, seed=seed, name="aug_shift", **fill)(x)
    if a.zoom:
        x = layers.RandomZoom(a.zoom, a.zoom, seed=seed, name="aug_zoom", **fill)(x)
    if a.rotation:
        x = layers.RandomRotation(a.rotation, seed=seed, name="aug_rotation", **fill)(x)
    if a.shear:
        x = layers.RandomShear(a.shear, a.shear, seed=seed, name="aug_shear", **fill)(x)
    return inputs, x


def classifier(x, num_classes: int, dropout: float = 0.0):
    """Softmax head; float32 output so mixed precision keeps a stable loss."""
    if dropout:
        x = layers.Dropout(dropout)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
