"""StrokeStream: on-the-fly rendering from the stroke shards, and stroke-level augmentation."""

import numpy as np
import pytest

from doodle.batches.cache import open_split
from doodle.batches.strokes import StrokeStream, shard_paths
from doodle.core.params import ParamError, from_mapping
from doodle.drawing.augment import CENTRE, StrokeAugmentParams, sample
from doodle.drawing.raster import RenderParams, render
from doodle.drawing.strokes import StrokeBatch
from doodle.render.params import RenderSection
from doodle.render.run import build_cache
from tests.conftest import generated_shards, one_epoch

ALL_ON = StrokeAugmentParams(scale=0.2, aspect=0.2, shift=0.1, rotation=20, shear=0.2, stroke_dropout=0.2)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards of a small generated sample, several row groups each (so blocks are shuffled)."""
    return generated_shards(tmp_path_factory.mktemp("strokes"), per_class=100, row_group_rows=150)


@pytest.mark.parametrize("channels", [1, 3])
def test_without_augmentation_the_images_are_the_caches_bytes(shards, tmp_path, channels):
    cfg = RenderSection(size=32, channels=channels, workers=1)
    build_cache(shards, tmp_path / "cache", cfg, progress=False, log=lambda *a: None)
    for split in ("train", "val"):
        cache = open_split(tmp_path / "cache", split)
        want = np.concatenate(cache.images)
        for augment in (None, StrokeAugmentParams()):  # all zero is off
            s = StrokeStream(shard_paths(shards, split), cfg.raster(), 97, shuffle=False, augment=augment)
            x, y = one_epoch(s)
            assert x.shape == want.shape and s.image_shape == want.shape[1:]
            assert np.array_equal(x, want)
            assert np.array_equal(y, cache.all_labels())
    # shuffled: one full pass of the same images, each with its own label
    cache = open_split(tmp_path / "cache", "train")
    want = np.concatenate(cache.images)
    s = StrokeStream(shard_paths(shards, "train"), cfg.raster(), 50, shuffle=True, seed=1, buffer_groups=2)
    x, y = one_epoch(s)
    label_of = {img.tobytes(): lab for img, lab in zip(want, cache.all_labels())}
    assert len(s) == -(-len(want) // 50) and len(x) == len(s) * 50
    assert all(label_of[img.tobytes()] == lab for img, lab in zip(x[: len(want)], y))
    assert len({img.tobytes() for img in x[: len(want)]}) == len(label_of)  # nothing lost or doubled


def test_batches_are_aligned_and_the_shuffle_is_seeded(shards):
    def stream(seed):
        return StrokeStream(shard_paths(shards, "train"), RenderParams(32), 64, shuffle=True, seed=seed, steps=5)

    x0, y0 = one_epoch(stream(0))
    assert len(y0) == 5 * 64 and y0.dtype == np.int32 and x0.dtype == np.uint8
    assert all(x.ctypes.data % 64 == 0 and x.flags.c_contiguous for x, _ in stream(0).epoch(0))
    assert np.array_equal(y0, one_epoch(stream(0))[1])
    assert not np.array_equal(y0, one_epoch(stream(0), 1)[1])
    assert not np.array_equal(y0, one_epoch(stream(1))[1])


def test_augmentation_is_seeded_by_seed_and_epoch_and_not_by_threads(shards):
    def run(seed, epoch, threads=2, shuffle=False):
        s = StrokeStream(
            shard_paths(shards, "train"), RenderParams(32), 64, shuffle, seed, steps=4, augment=ALL_ON, threads=threads
        )
        return one_epoch(s, epoch)

    x, y = run(0, 0)
    assert np.array_equal(x, run(0, 0, threads=3)[0])
    assert np.array_equal(x, run(0, 0, threads=1)[0])
    assert not np.array_equal(x, run(0, 1)[0])  # same drawings (no shuffle), new augmentations
    assert not np.array_equal(x, run(1, 0)[0])
    plain = one_epoch(StrokeStream(shard_paths(shards, "train"), RenderParams(32), 64, False, 0, steps=4))
    assert np.array_equal(y, plain[1]) and not np.array_equal(x, plain[0])
    assert np.array_equal(run(5, 2, shuffle=True)[0], run(5, 2, shuffle=True, threads=1)[0])


def line(angle_deg=0.0, scale=1.0):
    """A 200-unit horizontal line through the canvas centre, and the matrix turning it."""
    t = np.deg2rad(angle_deg)
    m = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    affine = np.concatenate([m, (CENTRE - m.sum(1) * CENTRE)[:, None]], 1)[None].astype(np.float32)
    return StrokeBatch.from_lists([[[[28, 228], [128, 128]]]]), affine


def test_rotation_keeps_the_ink_and_the_line_width():
    # 128 px: a 3-pixel line. At 64 px (1.5 pixels wide) an axis-aligned line covers two whole
    # rows of pixels, a third more than its width: the pixel grid, not the transform.
    p = RenderParams(128)
    strokes, _ = line()
    ink0 = (render(strokes, p) > 0).sum()
    radius = p.line_width * p.size / 256 / 2
    ideal = 200 * p.size / 256 * 2 * radius + np.pi * radius**2  # length x width + round caps
    assert abs(ink0 / ideal - 1) < 0.08
    for angle in (15, 30, 45, 60, 90, 135, 180):
        strokes, affine = line(angle)
        img = render(strokes, p, affine=affine)[0, ..., 0]
        assert abs((img > 0).sum() / ink0 - 1) < 0.08, angle
        # every inked pixel lies within the (unchanged) half width of the turned centre line
        v, u = np.nonzero(img)
        (x0, x1), (y0, y1) = [affine[0, r, :2] @ np.array([[28, 228], [128, 128]]) + affine[0, r, 2] for r in (0, 1)]
        to_px = lambda c: (c + 0.5) * p.size / 256 - 0.5  # noqa: E731
        d = np.abs((to_px(x1) - to_px(x0)) * (to_px(y0) - v) - (to_px(x0) - u) * (to_px(y1) - to_px(y0)))
        assert (d / np.hypot(to_px(x1) - to_px(x0), to_px(y1) - to_px(y0))).max() <= radius + 1e-6
    # zooming the strokes lengthens the line but keeps its width: ink grows ~1.2x, not 1.2^2 = 1.44
    strokes, affine = line(30, scale=1.2)
    assert 1.12 < (render(strokes, p, affine=affine) > 0).sum() / ink0 < 1.28


def test_sampled_transforms_are_what_the_params_say():
    rng = np.random.default_rng(0)
    counts = np.full(500, 3)
    affine, keep = sample(rng, counts, StrokeAugmentParams(rotation=30))
    assert keep is None and affine.shape == (500, 2, 3) and affine.dtype == np.float32
    m = affine[:, :, :2].astype(np.float64)
    assert np.allclose(m @ m.transpose(0, 2, 1), np.eye(2), atol=1e-5)  # rotations only
    assert np.allclose(affine @ np.array([CENTRE, CENTRE, 1.0]), CENTRE, atol=1e-3)  # about the centre
    angles = np.degrees(np.arctan2(m[:, 1, 0], m[:, 0, 0]))
    assert np.abs(angles).max() <= 30 + 1e-3 and np.abs(angles).max() > 25
    affine, _ = sample(rng, counts, StrokeAugmentParams(shift=0.1))
    assert np.allclose(affine[:, :, :2], np.eye(2)) and np.abs(affine[:, :, 2]).max() <= 25.6 + 1e-4
    assert sample(rng, counts, StrokeAugmentParams()) == (None, None)


def test_stroke_dropout_removes_whole_strokes_but_never_all():
    rng = np.random.default_rng(1)
    # drawings of 1..6 vertical strokes at distinct places
    drawings = [[[[20 + 40 * k, 20 + 40 * k], [30, 220]] for k in range(n)] for n in range(1, 7)] * 50
    strokes = StrokeBatch.from_lists(drawings)
    _, keep = sample(rng, strokes.stroke_counts(), StrokeAugmentParams(stroke_dropout=0.7))
    so = strokes.stroke_offsets
    kept = np.add.reduceat(keep, so[:-1])
    assert kept.min() >= 1 and 0.2 < keep.mean() < 0.5
    p = RenderParams(32, channels=3)
    got = render(strokes, p, keep=keep)
    for i in range(0, len(drawings), 7):
        # the same image as the drawing without its dropped strokes (later strokes move up in order)
        left = [s for s, k in zip(drawings[i], keep[so[i] : so[i + 1]]) if k]
        assert np.array_equal(got[i], render(StrokeBatch.from_lists([left]), p)[0])
    assert np.array_equal(render(strokes, p, keep=np.ones_like(keep)), render(strokes, p))


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"rotation": 400}, "train.stroke_augment.rotation"),
        ({"scale": -0.1}, "train.stroke_augment.scale"),
        ({"stroke_dropout": 1.0}, "train.stroke_augment.stroke_dropout"),
        ({"shift": 0.9}, "train.stroke_augment.shift"),
        ({"zoom": 0.1}, "train.stroke_augment.zoom"),
    ],
)
def test_params_validation_names_the_bad_key(raw, key):
    with pytest.raises(ParamError, match=key.replace(".", r"\.")):
        from_mapping(StrokeAugmentParams, raw, "train.stroke_augment")


def test_tf_dataset_takes_a_stroke_stream(shards):
    pytest.importorskip("tensorflow")
    from doodle.batches.batching import tf_dataset

    s = StrokeStream(shard_paths(shards, "train"), RenderParams(32), 40, True, seed=2, steps=3, augment=ALL_ON)
    got = list(tf_dataset(s, repeat=True, start_epoch=1).take(4).as_numpy_iterator())
    want = [b for _, b in zip(range(4), s.forever(1))]
    assert len(got) == 4
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.shape == (40, 32, 32, 1) and np.array_equal(gx, wx) and np.array_equal(gy, wy)
