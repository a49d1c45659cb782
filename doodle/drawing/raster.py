"""The one rasterizer: StrokeBatch -> uint8 images. Train, validation, test and plots all call
:func:`render`, with one :class:`RenderParams`, so training and prediction cannot drift apart.

Why not OpenCV like the public kernels? They parse JSON per drawing, draw each segment with
``cv2.line`` on a 256x256 canvas, then ``cv2.resize`` to 64x64: 16x the pixels needed plus a
Python call per segment. Here a compiled kernel draws each segment directly at the target size
as the set of pixel centres within ``line_width / 2`` of it (or with an anti-aliased edge),
over a whole batch of drawings per call.

Geometry matches the baseline: source coordinate ``c`` in 0..255 maps to pixel
``(c + 0.5) * size / 256 - 0.5`` (the centre-aligned mapping ``cv2.resize`` uses), and
``line_width`` is measured on the 256-pixel canvas (the baseline's 6), so a drawing keeps its
look when ``size`` changes. The half width never goes below 0.5 px, so lines stay connected
at small sizes.

Channels:
  * 1: stroke order, ``255 - min(stroke_index, 10) * 13`` as in the public baseline
    (later strokes are drawn over earlier ones).
  * 3: [0] stroke order as above; [1] time along the drawing, 255 at the first point down to
    55 at the last (the order of points across strokes); [2] segment length, 255 for short
    segments down to 55 for segments of 128+ source pixels: Google's simplification keeps
    many short segments on curves and details and few long ones on straight runs, so this
    is a proxy for curvature and pen speed.

Augmentation (:mod:`doodle.drawing.augment`): ``render`` optionally takes a 2x3 affine matrix per drawing,
applied to the source coordinates before the pixel mapping, and a keep mask per stroke. Warping
the coordinates rather than the finished image keeps the line width constant and the edges sharp.
A dropped stroke is treated as never drawn: later strokes move up in stroke order and time runs
over the kept points only, so an augmented drawing looks like one a person could have made.
Without either argument the original kernel runs, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numba
import numpy as np

from doodle.core.params import require

from .strokes import StrokeBatch


@dataclass(frozen=True)
class RenderParams:
    """params.yaml section ``render`` (the rendering part; the stage adds what to render)."""

    size: int = 64
    line_width: float = 6.0
    channels: Literal[1, 3] = 1
    antialias: bool = False

    #: The encoder interface it shares with :class:`doodle.drawing.sequence.SequenceParams`.
    kind: ClassVar[str] = "image"
    dtype: ClassVar[type] = np.uint8
    draws_images: ClassVar[bool] = True  # pixels: pixel sources can be fitted to it, a cache can hold it

    def validate(self, where: str = "render") -> None:
        require(8 <= self.size <= 512, f"{where}.size", f"must be in 8..512, got {self.size}")
        require(0 < self.line_width <= 64, f"{where}.line_width", f"must be in (0, 64], got {self.line_width}")
        require(self.channels in (1, 3), f"{where}.channels", f"must be 1 or 3, got {self.channels}")

    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "line_width": self.line_width,
            "channels": self.channels,
            "antialias": self.antialias,
        }

    def mirror(self, inputs: np.ndarray) -> np.ndarray:
        """Encoded drawings mirrored left-right (test-time augmentation): the images flipped."""
        return np.ascontiguousarray(inputs[:, :, ::-1])

    def encode(
        self,
        strokes: StrokeBatch,
        out: np.ndarray | None = None,
        affine: np.ndarray | None = None,
        keep: np.ndarray | None = None,
    ) -> np.ndarray:
        """:func:`render` with these params: the encoder interface (see :mod:`doodle.drawing.sequence`)."""
        return render(strokes, self, out=out, affine=affine, keep=keep)


#: The 2x3 affine matrix that leaves a drawing as it is.
IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _paint(img, u0, v0, u1, v1, radius, antialias, c0, c1, c2, channels):
    """Ink the pixels whose centres lie within ``radius`` of segment (u0,v0)-(u1,v1).

    Segments at these sizes are a few pixels long, so testing their bounding box beats
    smarter scan conversion; with ``antialias`` a one-pixel edge is alpha-blended.
    """
    size = img.shape[0]
    reach = radius + (0.5 if antialias else 0.0)
    x_lo = max(math.ceil(min(u0, u1) - reach), 0)
    x_hi = min(math.floor(max(u0, u1) + reach), size - 1)
    y_lo = max(math.ceil(min(v0, v1) - reach), 0)
    y_hi = min(math.floor(max(v0, v1) + reach), size - 1)
    dx = u1 - u0
    dy = v1 - v0
    l2 = dx * dx + dy * dy
    inv = 1.0 / l2 if l2 > 0 else 0.0
    r2 = radius * radius
    if not antialias:  # the branch sits outside the pixel loops: this is the hot path
        for py in range(y_lo, y_hi + 1):
            fy = py - v0
            for px in range(x_lo, x_hi + 1):
                fx = px - u0
                t = min(max((fx * dx + fy * dy) * inv, 0.0), 1.0)
                ex = t * dx - fx
                ey = t * dy - fy
                if ex * ex + ey * ey <= r2:
                    img[py, px, 0] = c0
                    if channels == 3:
                        img[py, px, 1] = c1
                        img[py, px, 2] = c2
        return
    for py in range(y_lo, y_hi + 1):
        fy = py - v0
        for px in range(x_lo, x_hi + 1):
            fx = px - u0
            t = min(max((fx * dx + fy * dy) * inv, 0.0), 1.0)
            ex = t * dx - fx
            ey = t * dy - fy
            cov = radius + 0.5 - math.sqrt(ex * ex + ey * ey)
            if cov > 0.0:
                a = min(cov, 1.0)
                img[py, px, 0] = np.uint8(img[py, px, 0] * (1.0 - a) + c0 * a + 0.5)
                if channels == 3:
                    img[py, px, 1] = np.uint8(img[py, px, 1] * (1.0 - a) + c1 * a + 0.5)
                    img[py, px, 2] = np.uint8(img[py, px, 2] * (1.0 - a) + c2 * a + 0.5)


@numba.njit(cache=True, nogil=True)
def _render_kernel(x, y, po, so, out, scale, radius, antialias):
    n = so.size - 1
    channels = out.shape[3]
    for i in range(n):
        img = out[i]
        img[:] = 0
        s_lo = so[i]
        s_hi = so[i + 1]
        first = po[s_lo]
        total = po[s_hi] - first
        span = max(total - 1, 1)
        for s in range(s_lo, s_hi):
            c0 = 255 - min(s - s_lo, 10) * 13
            a = po[s]
            b = po[s + 1]
            if b <= a:
                continue
            if b - a == 1:  # a dot
                u = (x[a] + 0.5) * scale - 0.5
                v = (y[a] + 0.5) * scale - 0.5
                c1 = 255 - (200 * (a - first)) // span
                _paint(img, u, v, u, v, radius, antialias, c0, c1, 255, channels)
                continue
            for p in range(a, b - 1):
                u0 = (x[p] + 0.5) * scale - 0.5
                v0 = (y[p] + 0.5) * scale - 0.5
                u1 = (x[p + 1] + 0.5) * scale - 0.5
                v1 = (y[p + 1] + 0.5) * scale - 0.5
                c1 = 255 - (200 * (p - first)) // span
                c2 = 255
                if channels == 3:
                    ddx = float(x[p + 1]) - float(x[p])
                    ddy = float(y[p + 1]) - float(y[p])
                    c2 = 255 - int(200.0 * min(np.sqrt(ddx * ddx + ddy * ddy) / 128.0, 1.0))
                _paint(img, u0, v0, u1, v1, radius, antialias, c0, c1, c2, channels)


@numba.njit(cache=True, nogil=True)
def _render_kernel_augmented(x, y, po, so, out, scale, radius, antialias, affine, keep):
    """:func:`_render_kernel` with per-drawing affine matrices (``affine[i]`` maps source (x, y)
    to x' = a00 x + a01 y + a02, y' = a10 x + a11 y + a12) and a per-stroke keep mask
    (``keep[s - so[0]]``). Stroke order and time count kept strokes and points only; the segment
    length (channel 2) is measured after the transform, on what is drawn. Coordinates may leave
    0..255: :func:`_paint` clips at the image border. A separate kernel so that the plain one,
    the render stage's hot path, stays exactly as it was."""
    n = so.size - 1
    channels = out.shape[3]
    s_base = so[0]
    for i in range(n):
        img = out[i]
        img[:] = 0
        s_lo = so[i]
        s_hi = so[i + 1]
        a00 = float(affine[i, 0, 0])
        a01 = float(affine[i, 0, 1])
        a02 = float(affine[i, 0, 2])
        a10 = float(affine[i, 1, 0])
        a11 = float(affine[i, 1, 1])
        a12 = float(affine[i, 1, 2])
        total = 0
        for s in range(s_lo, s_hi):
            if keep[s - s_base]:
                total += max(po[s + 1] - po[s], 0)
        span = max(total - 1, 1)
        k = 0  # kept strokes so far: the stroke order
        t = 0  # kept points so far: the time along the drawing
        for s in range(s_lo, s_hi):
            a = po[s]
            b = po[s + 1]
            if b <= a or not keep[s - s_base]:
                continue
            c0 = 255 - min(k, 10) * 13
            k += 1
            # (x0, y0): the transformed source point; with the identity it is exactly x[a], y[a]
            x0 = a00 * float(x[a]) + a01 * float(y[a]) + a02
            y0 = a10 * float(x[a]) + a11 * float(y[a]) + a12
            if b - a == 1:  # a dot
                u = (x0 + 0.5) * scale - 0.5
                v = (y0 + 0.5) * scale - 0.5
                c1 = 255 - (200 * t) // span
                _paint(img, u, v, u, v, radius, antialias, c0, c1, 255, channels)
                t += 1
                continue
            for p in range(a, b - 1):
                x1 = a00 * float(x[p + 1]) + a01 * float(y[p + 1]) + a02
                y1 = a10 * float(x[p + 1]) + a11 * float(y[p + 1]) + a12
                c1 = 255 - (200 * t) // span
                c2 = 255
                if channels == 3:
                    ddx = x1 - x0
                    ddy = y1 - y0
                    c2 = 255 - int(200.0 * min(np.sqrt(ddx * ddx + ddy * ddy) / 128.0, 1.0))
                u0 = (x0 + 0.5) * scale - 0.5
                v0 = (y0 + 0.5) * scale - 0.5
                u1 = (x1 + 0.5) * scale - 0.5
                v1 = (y1 + 0.5) * scale - 0.5
                _paint(img, u0, v0, u1, v1, radius, antialias, c0, c1, c2, channels)
                x0 = x1
                y0 = y1
                t += 1
            t += 1  # the stroke's last point


def checked_output(strokes: StrokeBatch, shape: tuple, dtype, out, affine, keep) -> np.ndarray:
    """The array an encoder writes ``strokes`` into: ``out``, or a new one of ``(n, *shape)``, once
    ``out``, ``affine`` (float32 ``(n, 2, 3)``) and ``keep`` (one flag per stroke of the batch) are
    checked against the batch. The one set of argument rules of both encoders, :func:`render` and
    :func:`doodle.drawing.sequence.encode_sequences`."""
    n = len(strokes)
    shape, name = (n, *shape), np.dtype(dtype).name
    if out is None:
        out = np.empty(shape, dtype)
    elif out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape}/{out.dtype}, expected {shape}/{name}")
    if affine is not None and affine.shape != (n, 2, 3):
        raise ValueError(f"affine has shape {affine.shape}, expected {(n, 2, 3)}")
    so = np.asarray(strokes.stroke_offsets, np.int64)
    strokes_in_batch = int(so[-1] - so[0]) if len(so) else 0
    if keep is not None and keep.shape != (strokes_in_batch,):
        raise ValueError(f"keep has shape {keep.shape}, expected ({strokes_in_batch},): one entry per stroke")
    return out


def render(
    strokes: StrokeBatch,
    params: RenderParams,
    out: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Render every drawing of ``strokes``; returns uint8 ``(n, size, size, channels)``.

    Empty drawings (no strokes) come out blank. ``out`` may be a slice of a memory-mapped cache.
    Augmentation (see :mod:`doodle.drawing.augment`), both optional: ``affine``, float32 ``(n, 2, 3)``, one
    matrix per drawing acting on the 0..255 source coordinates; ``keep``, bool, one entry per stroke
    of the batch in drawing order (``stroke_offsets[-1] - stroke_offsets[0]`` of them), False = not
    drawn. With neither, this is the plain render the cache holds.
    """
    n = len(strokes)
    out = checked_output(strokes, params.shape(), np.uint8, out, affine, keep)
    if n == 0:
        return out
    scale = params.size / 256.0
    radius = max(params.line_width * scale / 2.0, 0.5)
    x = np.ascontiguousarray(strokes.x)
    y = np.ascontiguousarray(strokes.y)
    po = np.asarray(strokes.point_offsets, np.int64)
    so = np.asarray(strokes.stroke_offsets, np.int64)
    if affine is None and keep is None:
        _render_kernel(x, y, po, so, out, scale, radius, bool(params.antialias))
        return out
    if affine is None:
        affine = np.broadcast_to(IDENTITY, (n, 2, 3))
    if keep is None:
        keep = np.ones(int(so[-1] - so[0]), np.bool_)
    _render_kernel_augmented(
        x,
        y,
        po,
        so,
        out,
        scale,
        radius,
        bool(params.antialias),
        np.ascontiguousarray(affine, np.float32),
        np.ascontiguousarray(keep, np.bool_),
    )
    return out
