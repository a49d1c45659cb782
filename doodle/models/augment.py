"""params.yaml ``train.augment``: the on-device image augmentation the input head adds
(:func:`doodle.models.common.input_head`). Kept apart from the Keras code so params can be
checked without importing a framework."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AugmentParams:
    """params.yaml ``train.augment``: all off (0) by default."""

    shift: float = 0.0  # fraction of the image, random translation
    zoom: float = 0.0  # fraction, random zoom in/out
    rotation: float = 0.0  # fraction of a full turn
    shear: float = 0.0  # shear factor
    flip: bool = False  # random horizontal flip

    def any(self) -> bool:
        return bool(self.shift or self.zoom or self.rotation or self.shear or self.flip)
