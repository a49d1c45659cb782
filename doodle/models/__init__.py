"""Model architectures, one module each, behind one builder: ``build_model(name, ...)``.

All are pure Keras 3 (``keras.layers``, ``keras.ops``), so they build under any backend.
"""

from __future__ import annotations

from . import cnn, efficientnet, mlp, mobilenet, seed_cnn
from .common import AugmentParams

ARCHITECTURES = {
    "cnn": cnn.build,
    "seed_cnn": seed_cnn.build,
    "mobilenet": mobilenet.build,
    "mlp": mlp.build,
    "efficientnet": efficientnet.build,
}


def build_model(
    name: str, input_shape, num_classes: int, width: float = 1.0, augment: AugmentParams | None = None, seed: int = 0
):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](input_shape, num_classes, width=width, augment=augment, seed=seed)


__all__ = ["ARCHITECTURES", "AugmentParams", "build_model"]
