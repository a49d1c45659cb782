import json

import numpy as np
import pytest

from benchmarks.reference import render_reference
from doodle.drawing.raster import RenderParams, render
from doodle.drawing.strokes import StrokeBatch
from tests.conftest import KAGGLE


def one(drawing, **kw):
    return render(StrokeBatch.from_lists([drawing]), RenderParams(**{"size": 64, **kw}))[0]


def test_shapes_dtype_and_determinism():
    b = StrokeBatch.from_lists([[[[0, 255], [0, 255]]], [[[10, 20, 30], [40, 50, 60]]]])
    for size, ch in [(32, 1), (64, 3), (128, 1)]:
        p = RenderParams(size=size, channels=ch)
        a = render(b, p)
        assert a.shape == (2, size, size, ch) and a.dtype == np.uint8
        assert np.array_equal(a, render(b, p))


def test_canvas_edges_are_drawn():
    img = one([[[0, 255], [0, 0]], [[0, 255], [255, 255]]])[..., 0]
    assert img[0].min() == 255 and img[-1].max() > 0  # top row fully inked by the first stroke
    assert img[-1, 0] == 255 - 13  # second stroke, bottom row


def test_one_point_stroke_is_a_dot():
    img = one([[[128], [128]]])[..., 0]
    assert 1 <= (img > 0).sum() <= 9 and img[32, 32] == 255


def test_stroke_order_intensity_caps_after_ten_strokes():
    drawing = [[[10 + 15 * i, 10 + 15 * i], [20, 200]] for i in range(14)]
    img = one(drawing)[..., 0]
    cols = [int(np.round((10 + 15 * i + 0.5) / 4 - 0.5)) for i in range(14)]
    got = [img[100 // 4, c] for c in cols]
    assert got == [255 - min(i, 10) * 13 for i in range(14)]


def test_empty_drawing_renders_blank():
    b = StrokeBatch.from_lists([[]])
    assert len(b) == 1 and render(b, RenderParams(size=32)).max() == 0


def test_three_channels_and_antialias():
    d = [[[0, 128, 255], [0, 200, 255]], [[0, 50], [255, 255]]]
    rgb = one(d, channels=3)
    assert np.array_equal(rgb[..., 0], one(d)[..., 0])  # channel 0 is the 1-channel encoding
    assert rgb[..., 1].max() == 255 and 0 < rgb[..., 1][rgb[..., 1] > 0].min() < 255  # time fades
    aa = one(d, antialias=True)[..., 0]
    assert len(np.unique(aa)) > len(np.unique(one(d)[..., 0]))


def test_out_buffer_is_checked():
    with pytest.raises(ValueError, match="expected"):
        render(StrokeBatch.from_lists([[[[1], [1]]]]), RenderParams(size=32), out=np.zeros((1, 16, 16, 1), np.uint8))


def _drawings_for_fidelity():
    if KAGGLE.is_dir():
        import csv

        texts = []
        for f in sorted((KAGGLE / "train_simplified").glob("*.csv"))[::4]:
            with f.open(newline="") as fh:
                texts += [r["drawing"] for r in list(csv.DictReader(fh))[:5]]
        return texts
    from doodle.sample.doodles import draw

    rng = np.random.default_rng(0)
    return [json.dumps(draw(w, rng)) for w in ["circle", "star", "house", "sun", "cloud"] * 40]


def _near(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels of mask a within one pixel (8-neighbourhood) of mask b."""
    grown = np.zeros_like(b)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(b, dy, 0), dx, 1)
    return (a & grown).sum() / max(a.sum(), 1)


def test_fidelity_against_the_public_baseline():
    from doodle.drawing.parse import parse_drawings

    texts = _drawings_for_fidelity()
    ours = render(parse_drawings(texts).strokes, RenderParams(size=64))[..., 0]
    scheme = {255 - 13 * k for k in range(11)}
    ours_in_ref, ref_in_ours, same_colour = [], [], []
    for img, text in zip(ours, texts):
        ref = render_reference(text, 64)
        ours_in_ref.append(_near(img > 0, ref > 0))
        ref_in_ours.append(_near(ref > 127, img > 0))
        assert set(np.unique(img[img > 0]).tolist()) <= scheme  # the baseline's stroke-order colours
        pure = np.isin(ref, list(scheme)) & (img > 0)  # reference pixels not blended by resize
        if pure.any():
            same_colour.append((img[pure] == ref[pure]).mean())
    assert np.mean(same_colour) >= 0.9, np.mean(same_colour)
    assert np.mean(ours_in_ref) >= 0.98, np.mean(ours_in_ref)
    assert np.mean(ref_in_ours) >= 0.98, np.mean(ref_in_ours)


# --------------------------------------------------------------------------- augmentation inputs
def _drawings():
    return StrokeBatch.from_lists(
        [
            [[[0, 128, 255], [0, 200, 255]], [[0, 50], [255, 255]], [[90], [90]]],
            [[[10, 20, 30], [40, 50, 60]]],
            [],
            [[[100, 160], [30, 30]], [[100, 160], [60, 60]]],
        ]
    )


@pytest.mark.parametrize("kw", [{}, {"channels": 3}, {"antialias": True}, {"size": 32, "channels": 3}])
def test_identity_affine_and_keeping_every_stroke_draw_the_plain_image(kw):
    b = _drawings()
    p = RenderParams(**{"size": 64, **kw})
    plain = render(b, p)
    identity = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (len(b), 1, 1))
    every = np.ones(int(b.stroke_offsets[-1]), bool)
    assert np.array_equal(render(b, p, affine=identity), plain)
    assert np.array_equal(render(b, p, keep=every), plain)
    assert np.array_equal(render(b, p, affine=identity, keep=every), plain)


def test_affine_moves_the_coordinates_and_clips_at_the_border():
    b = _drawings()
    p = RenderParams(64)
    shift = np.tile(np.array([[1, 0, 32], [0, 1, -16]], np.float32), (len(b), 1, 1))  # 8 px right, 4 px up
    moved = render(b, p, affine=shift)
    want = np.roll(np.roll(render(b, p), 8, axis=2), -4, axis=1)
    assert np.array_equal(moved[1], want[1]) and np.array_equal(moved[3], want[3])  # away from the border
    away = np.tile(np.array([[1, 0, 1000], [0, 1, 0]], np.float32), (len(b), 1, 1))
    assert render(b, p, affine=away).max() == 0  # drawn entirely off the canvas: nothing, no crash


def test_dropped_strokes_are_not_drawn_and_later_strokes_move_up():
    b = _drawings()
    p = RenderParams(64)
    keep = np.array([False, True, True, True, True, False])  # drop the first of 0 and the second of 3
    got = render(b, p, keep=keep)
    d = [b.drawing(i) for i in range(len(b))]
    want = render(StrokeBatch.from_lists([d[0][1:], d[1], d[2], d[3][:1]]), p)
    assert np.array_equal(got, want)
    assert got[0].max() == 255  # the second stroke is now the first, at full intensity


def test_augmentation_inputs_are_checked():
    b = _drawings()
    with pytest.raises(ValueError, match="affine"):
        render(b, RenderParams(32), affine=np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="keep"):
        render(b, RenderParams(32), keep=np.ones(3, bool))
