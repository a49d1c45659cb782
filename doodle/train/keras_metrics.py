"""MAP@3 as a Keras metric and the label-smoothed loss, in ``keras.ops`` (any backend): what a
model is compiled with. The numpy MAP@3 used for scoring is doodle.core.metrics; ties are broken the
same way (towards the lower class index, as ``top_k`` does).
"""

from __future__ import annotations

import keras
from keras import ops


def map_at_3_per_sample(y_true, y_pred):
    """1, 1/2, 1/3 or 0 per sample: the reciprocal rank of the true class within the top 3."""
    _, top = ops.top_k(y_pred, k=3)
    y = ops.reshape(ops.cast(y_true, top.dtype), (-1, 1))
    hits = ops.cast(ops.equal(top, y), "float32")
    return ops.sum(hits * ops.convert_to_tensor([1.0, 1.0 / 2.0, 1.0 / 3.0]), axis=-1)


@keras.saving.register_keras_serializable(package="doodle")
class MapAt3(keras.metrics.MeanMetricWrapper):
    def __init__(self, name="map_at_3", dtype=None):
        super().__init__(fn=map_at_3_per_sample, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="doodle")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing (Keras' sparse loss has none)."""

    def __init__(self, smoothing: float = 0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)
        logp = ops.log(y_pred)
        n = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), n)
        target = onehot * (1.0 - self.smoothing) + self.smoothing / ops.cast(n, "float32")
        return -ops.sum(target * logp, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}
