"""Reference implementations of the common public Quick Draw baseline, for benchmarks and the
fidelity test only. The pipeline never calls these: it renders with :func:`doodle.drawing.raster.render`.
"""

from __future__ import annotations

import ast

import cv2
import numpy as np

BASE_SIZE = 256


def draw_cv2(raw_strokes, size: int = 64, lw: int = 6) -> np.ndarray:
    """The baseline's renderer: cv2.line per segment on 256x256, stroke-order colour, resize."""
    img = np.zeros((BASE_SIZE, BASE_SIZE), np.uint8)
    for t, stroke in enumerate(raw_strokes):
        for i in range(len(stroke[0]) - 1):
            color = 255 - min(t, 10) * 13
            cv2.line(img, (stroke[0][i], stroke[1][i]), (stroke[0][i + 1], stroke[1][i + 1]), color, lw)
        if len(stroke[0]) == 1:  # a dot: cv2.line with equal ends draws one
            color = 255 - min(t, 10) * 13
            cv2.line(img, (stroke[0][0], stroke[1][0]), (stroke[0][0], stroke[1][0]), color, lw)
    if size != BASE_SIZE:
        return cv2.resize(img, (size, size))
    return img


def render_reference(drawing_text: str, size: int = 64, lw: int = 6) -> np.ndarray:
    """Parse the drawing text with ``ast.literal_eval`` and draw it as the baseline does."""
    return draw_cv2(ast.literal_eval(drawing_text), size=size, lw=lw)
