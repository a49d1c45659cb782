"""Stroke-level augmentation: random geometry and stroke dropout, applied before drawing.

Image-space augmentation (the model's ``train.augment``) warps finished pixels: a zoomed-in
drawing gets thicker, blurred lines, a rotated one jagged edges. Here the drawing's 0..255
coordinates are transformed and then drawn by the one rasterizer (:func:`doodle.drawing.raster.render`),
so the line width, the edges and the stroke-order colours stay exactly those of a real drawing.

:func:`sample` draws, for a batch of drawings, one 2x3 affine matrix per drawing and one keep
flag per stroke from a ``np.random.Generator``, vectorised over the batch. The caller seeds the
generator from (seed, epoch), so the same seed and epoch give the same images and every epoch
sees different versions of each drawing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from doodle.core.params import require

#: The centre of the 256x256 source canvas (pixel centres sit on integer coordinates 0..255):
#: scaling, rotation and shear leave it in place.
CENTRE = 127.5


@dataclass(frozen=True)
class StrokeAugmentParams:
    """Random transforms per drawing, each drawn uniformly from its range; 0 turns one off and
    all 0 (the default) is no augmentation.

    - ``scale``: size factor in [1 - scale, 1 + scale] (both axes), e.g. 0.2 = 80%..120%.
    - ``aspect``: stretch of x against y: x is multiplied by sqrt(r) and y divided by it, with
      log r uniform in [-log(1 + aspect), log(1 + aspect)]; the area stays.
    - ``shift``: translation of x and y each, as a fraction of the canvas, in [-shift, shift].
    - ``rotation``: angle in degrees, in [-rotation, rotation].
    - ``shear``: horizontal shear factor (x += k * y about the centre), k in [-shear, shear].
    - ``stroke_dropout``: probability that each stroke is left out; a drawing always keeps at
      least one stroke.

    Scale, aspect, shear and rotation act about the canvas centre, in that order, then the shift.
    A transformed drawing may reach past the canvas; what falls outside is clipped.
    """

    scale: float = 0.0
    aspect: float = 0.0
    shift: float = 0.0
    rotation: float = 0.0
    shear: float = 0.0
    stroke_dropout: float = 0.0

    def validate(self, where: str = "stroke_augment") -> None:
        require(0 <= self.scale < 1, f"{where}.scale", f"must be in [0, 1), got {self.scale}")
        require(0 <= self.aspect <= 1, f"{where}.aspect", f"must be in [0, 1], got {self.aspect}")
        require(0 <= self.shift <= 0.5, f"{where}.shift", f"must be in [0, 0.5] (of the canvas), got {self.shift}")
        require(0 <= self.rotation <= 180, f"{where}.rotation", f"must be in [0, 180] degrees, got {self.rotation}")
        require(0 <= self.shear <= 1, f"{where}.shear", f"must be in [0, 1], got {self.shear}")
        require(
            0 <= self.stroke_dropout < 1,
            f"{where}.stroke_dropout",
            f"must be in [0, 1), got {self.stroke_dropout}",
        )

    def transforms(self) -> bool:
        """Whether any geometric transform is on."""
        return bool(self.scale or self.aspect or self.shift or self.rotation or self.shear)

    def any(self) -> bool:
        return self.transforms() or bool(self.stroke_dropout)

    def to_dict(self) -> dict:
        return asdict(self)


def sample(
    rng: np.random.Generator, stroke_counts: np.ndarray, params: StrokeAugmentParams
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(affine, keep) for drawings with ``stroke_counts`` strokes each, as :func:`doodle.drawing.raster.render`
    takes them: float32 ``(n, 2, 3)`` matrices on the source coordinates, or None when no transform
    is on; bool keep flags, one per stroke in drawing order, or None without stroke dropout.

    The random numbers drawn depend only on the batch's shape and the params, never on which
    thread renders what, so a seeded generator gives the same result every time."""
    counts = np.asarray(stroke_counts, np.int64)
    n = len(counts)
    affine = None
    if params.transforms():
        u = rng.uniform(-1.0, 1.0, size=(6, n))
        s = 1.0 + params.scale * u[0]
        root_r = np.exp(0.5 * np.log1p(params.aspect) * u[1])
        sx, sy = s * root_r, s / root_r
        k = params.shear * u[2]
        theta = np.deg2rad(params.rotation) * u[3]
        cos, sin = np.cos(theta), np.sin(theta)
        # M = R(theta) @ [[1, k], [0, 1]] @ diag(sx, sy)
        m = np.empty((n, 2, 2))
        m[:, 0, 0] = cos * sx
        m[:, 0, 1] = (cos * k - sin) * sy
        m[:, 1, 0] = sin * sx
        m[:, 1, 1] = (sin * k + cos) * sy
        shift = params.shift * 256.0 * u[4:6].T
        # x' = M (x - c) + c + shift
        offset = CENTRE - m.sum(axis=2) * CENTRE + shift
        affine = np.concatenate([m, offset[:, :, None]], axis=2).astype(np.float32)
    keep = None
    if params.stroke_dropout:
        keep = rng.random(int(counts.sum())) >= params.stroke_dropout
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        kept = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(keep, out=kept[1:])
        pick = rng.random(n)  # drawn for every drawing, so the stream of numbers has a fixed shape
        bare = np.flatnonzero((kept[starts[1:]] == kept[starts[:-1]]) & (counts > 0))
        keep[starts[bare] + (pick[bare] * counts[bare]).astype(np.int64)] = True
    return affine, keep
