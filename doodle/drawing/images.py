"""Pixel images (digits, numpy_bitmap) to model input: the counterpart of :func:`doodle.drawing.raster.render`
for sources whose drawings are images already. The render stage (train and validation cache) and
the predict stage (test rows) both call :func:`fit_images` with the model's
:class:`~doodle.drawing.raster.RenderParams`, so training and prediction cannot drift apart.

Only ``size`` and ``channels`` apply: an image of another size is resized with OpenCV,
``INTER_AREA`` when shrinking (it averages the covered pixels, so thin strokes do not alias
away) and ``INTER_LINEAR`` when enlarging (``INTER_AREA`` upsamples blockily); with
``channels: 3`` the one grey channel is repeated (pretrained-style models expect three).
``line_width`` and ``antialias`` describe stroke drawing and do nothing here.
"""

from __future__ import annotations

import numpy as np

from .raster import RenderParams

CV_MAX_CHANNELS = 4  # OpenCV 5's Python binding passes up to 4 channels: images are resized 4 at a time


def fit_images(images: np.ndarray, params: RenderParams, out: np.ndarray | None = None) -> np.ndarray:
    """(n, H, W) uint8 -> (n, size, size, channels) uint8, into ``out`` when given."""
    images = np.asarray(images, np.uint8)
    n, size, channels = len(images), params.size, params.channels
    if out is None:
        out = np.empty((n, size, size, channels), np.uint8)
    if images.shape[1:] == (size, size):
        resized = images
    else:
        import cv2

        shrink = images.shape[1] >= size and images.shape[2] >= size
        how = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        resized = np.empty((n, size, size), np.uint8)
        for a in range(0, n, CV_MAX_CHANNELS):
            part = np.ascontiguousarray(images[a : a + CV_MAX_CHANNELS].transpose(1, 2, 0))  # H x W x images
            done = cv2.resize(part, (size, size), interpolation=how)
            resized[a : a + CV_MAX_CHANNELS] = done.reshape(size, size, -1).transpose(2, 0, 1)
    out[...] = resized[..., None]  # broadcast: the grey channel repeated when channels is 3
    return out
