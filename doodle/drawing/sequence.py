"""The second encoder: StrokeBatch -> point sequences, for RNN and 1D-convolution models.

The rasterizer (:mod:`doodle.drawing.raster`) turns a drawing into pixels; this turns it into the
sequence of its points, one row a point, in drawing order, as float32 ``(n, max_points, C)``:

  * ``dx, dy`` (channels 0, 1): the offset from the previous point, / 255. The first point's offset
    is from the canvas centre (127.5, 127.5), so the sum of the offsets up to a point is its position
    relative to the centre: nothing of where the drawing lies is lost.
  * ``state`` (channel :data:`STATE_CHANNEL`): 1.0 for a point after which the pen stays down, 2.0
    for the last point of a stroke (the pen lifts after it). Padding rows are all 0, so a model's
    mask is ``state > 0``.
  * ``t`` (channel 3, with ``time``): the point's position along the drawing, ``i / (n - 1)`` for
    point ``i`` of the drawing's ``n`` points (0 for a one-point drawing). The simplified data has no
    timestamps; this is the order of points, as the raster's time channel.
  * ``x, y`` (the last two channels, with ``position``): the point itself, relative to the canvas
    centre, / 255. The offsets imply it, but a convolution sees only a window of them: with the
    position in every row, a 1-D convolution knows where on the canvas a stroke runs, as an image
    model does.

A drawing with more than ``max_points`` points keeps its first ``max_points`` (the rest are dropped;
``t`` still counts the whole drawing, and the last row kept is no stroke end unless it was one).

Augmentation takes what :func:`doodle.drawing.raster.render` takes, drawn by
:func:`doodle.drawing.augment.sample`: an ``affine`` 2x3 matrix per drawing on the 0..255 source
coordinates, and a ``keep`` flag per stroke. A transformed point is clipped to [0, 255], the canvas,
as the raster clips what leaves the image; the offsets are between clipped points. A dropped stroke
is treated as never drawn, as in the raster: the next kept point's offset is from the last kept one,
and ``t`` runs over the kept points only.

Both encoders expose one interface (:class:`Encoder`): ``kind``, ``dtype``, ``shape()``,
``to_dict()`` and ``encode(strokes, out=, affine=, keep=)``, so the batch streams and prediction
serve either; :func:`encoder_from_dict` rebuilds one from its ``kind`` and ``to_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numba
import numpy as np

from doodle.core.params import from_mapping, require

from .augment import CENTRE
from .raster import RenderParams, checked_output
from .strokes import StrokeBatch

#: The channel holding the pen state: > 0 on every real point, 0 on padding (the model's mask).
STATE_CHANNEL = 2
#: ``state`` of a point after which the pen stays down, and of the last point of a stroke.
PEN_DOWN = 1.0
PEN_UP = 2.0


class Encoder(Protocol):
    """What the batch streams need of an encoder: :class:`RenderParams` or :class:`SequenceParams`."""

    kind: ClassVar[str]  # "image" or "sequence": the name a model's metadata records
    dtype: ClassVar[type]  # of the encoded arrays
    draws_images: ClassVar[bool]  # whether its inputs are pixels (a cache can hold them, pixel data fit them)

    def mirror(self, inputs: np.ndarray) -> np.ndarray: ...

    def shape(self) -> tuple[int, ...]: ...

    def to_dict(self) -> dict: ...

    def encode(
        self,
        strokes: StrokeBatch,
        out: np.ndarray | None = None,
        affine: np.ndarray | None = None,
        keep: np.ndarray | None = None,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class SequenceParams:
    """params.yaml ``train.sequence``: drawings as point sequences (see the module doc)."""

    max_points: int = 128
    time: bool = False  # a 4th channel: the point's position along the drawing, 0..1
    position: bool = False  # 2 more channels: the point's x and y, relative to the centre

    kind: ClassVar[str] = "sequence"
    dtype: ClassVar[type] = np.float32
    draws_images: ClassVar[bool] = False

    def validate(self, where: str = "train.sequence") -> None:
        require(8 <= self.max_points <= 4096, f"{where}.max_points", f"must be in 8..4096, got {self.max_points}")

    @property
    def channels(self) -> int:
        return 3 + int(self.time) + 2 * int(self.position)

    @property
    def x_channels(self) -> tuple[int, ...]:
        """The channels that change sign when the drawing is mirrored left-right (dx, and x)."""
        return (0, self.channels - 2) if self.position else (0,)

    def shape(self) -> tuple[int, int]:
        return (self.max_points, self.channels)

    def mirror(self, inputs: np.ndarray) -> np.ndarray:
        """Encoded drawings mirrored left-right (test-time augmentation): every x step negated (x -> 255
        - x turns dx into -dx, the first point's offset from the centre too, and x relative to the
        centre into its negative), the sequence of the mirrored drawing; padding stays 0."""
        out = inputs.copy()
        out[..., list(self.x_channels)] *= -1
        return out

    def to_dict(self) -> dict:
        return {"max_points": self.max_points, "time": self.time, "position": self.position}

    def encode(
        self,
        strokes: StrokeBatch,
        out: np.ndarray | None = None,
        affine: np.ndarray | None = None,
        keep: np.ndarray | None = None,
    ) -> np.ndarray:
        return encode_sequences(strokes, self, out=out, affine=affine, keep=keep)


#: Every encoder by its ``kind``, and the params section its dict comes from (for error messages).
ENCODERS: dict[str, tuple[type, str]] = {
    RenderParams.kind: (RenderParams, "render"),
    SequenceParams.kind: (SequenceParams, "train.sequence"),
}


def encoder_spec(encoder: Encoder) -> dict[str, Any]:
    """``encoder`` as a model's metadata records it: its ``kind`` and its ``to_dict()``, which
    :func:`encoder_from_dict` reads back."""
    return {"kind": encoder.kind, **encoder.to_dict()}


def encoder_from_dict(kind: str, d: dict[str, Any]) -> RenderParams | SequenceParams:
    """The encoder of ``kind`` ("image" or "sequence") with the params of ``d``, as its ``to_dict()``
    wrote them (a model's metadata); a ``"kind"`` entry in ``d``, if any, must agree. Validated."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {sorted(ENCODERS)}")
    d = dict(d)
    if d.pop("kind", kind) != kind:
        raise ValueError(f"encoder params say kind {d.get('kind')!r}, expected {kind!r}")
    cls, where = ENCODERS[kind]
    return from_mapping(cls, d, where)


@numba.njit(cache=True, nogil=True)
def _encode_kernel(x, y, po, so, out, affine, keep, use_affine, use_keep, with_time, with_position):
    """Encode drawing ``i`` (strokes ``so[i]..so[i+1]``) into ``out[i]``. ``keep[s - so[0]]`` flags
    stroke ``s`` (``use_keep``); ``affine[i]`` maps source (x, y) to x' = a00 x + a01 y + a02,
    y' = a10 x + a11 y + a12, then clipped to 0..255 (``use_affine``). Unused arrays are dummies."""
    n = so.size - 1
    length = out.shape[1]
    channels = out.shape[2]
    s_base = so[0]
    for i in range(n):
        seq = out[i]
        s_lo = so[i]
        s_hi = so[i + 1]
        step = 0.0  # t per point: 1 / (kept points - 1)
        if with_time:
            total = 0
            for s in range(s_lo, s_hi):
                if not use_keep or keep[s - s_base]:
                    total += max(po[s + 1] - po[s], 0)
            if total > 1:
                step = 1.0 / (total - 1)
        a00 = a01 = a02 = a10 = a11 = a12 = 0.0
        if use_affine:
            a00 = float(affine[i, 0, 0])
            a01 = float(affine[i, 0, 1])
            a02 = float(affine[i, 0, 2])
            a10 = float(affine[i, 1, 0])
            a11 = float(affine[i, 1, 1])
            a12 = float(affine[i, 1, 2])
        px = CENTRE
        py = CENTRE
        j = 0
        for s in range(s_lo, s_hi):
            if j >= length:
                break
            if use_keep and not keep[s - s_base]:
                continue
            b = po[s + 1]
            for p in range(po[s], b):
                if j >= length:
                    break
                fx = float(x[p])
                fy = float(y[p])
                if use_affine:
                    tx = a00 * fx + a01 * fy + a02
                    ty = a10 * fx + a11 * fy + a12
                    fx = min(max(tx, 0.0), 255.0)
                    fy = min(max(ty, 0.0), 255.0)
                seq[j, 0] = (fx - px) / 255.0
                seq[j, 1] = (fy - py) / 255.0
                seq[j, 2] = PEN_UP if p == b - 1 else PEN_DOWN
                if with_time:
                    seq[j, 3] = j * step
                if with_position:
                    seq[j, channels - 2] = (fx - CENTRE) / 255.0
                    seq[j, channels - 1] = (fy - CENTRE) / 255.0
                px = fx
                py = fy
                j += 1
        for k in range(j, length):  # padding
            for c in range(channels):
                seq[k, c] = 0.0


_NO_AFFINE = np.zeros((1, 2, 3), np.float32)
_NO_KEEP = np.ones(1, np.bool_)


def encode_sequences(
    strokes: StrokeBatch,
    params: SequenceParams,
    out: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Encode every drawing of ``strokes``; returns float32 ``(n, max_points, channels)`` (see the
    module doc). Empty drawings come out as padding only. ``out`` may be a slice of a batch array
    (any float32 array of that shape). ``affine`` (float32 ``(n, 2, 3)``) and ``keep`` (bool, one per
    stroke of the batch in drawing order, ``stroke_offsets[-1] - stroke_offsets[0]`` of them) as
    :func:`doodle.drawing.raster.render` takes them."""
    out = checked_output(strokes, params.shape(), np.float32, out, affine, keep)
    if len(strokes) == 0:
        return out
    so = np.asarray(strokes.stroke_offsets, np.int64)
    _encode_kernel(
        np.ascontiguousarray(strokes.x),
        np.ascontiguousarray(strokes.y),
        np.asarray(strokes.point_offsets, np.int64),
        so,
        out,
        _NO_AFFINE if affine is None else np.ascontiguousarray(affine, np.float32),
        _NO_KEEP if keep is None else np.ascontiguousarray(keep, np.bool_),
        affine is not None,
        keep is not None,
        bool(params.time),
        bool(params.position),
    )
    return out
