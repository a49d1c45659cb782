"""The stroke-sequence encoder, the one encoder interface it shares with the rasterizer, the
StrokeStream over either, and the stroke models."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from doodle.batches.batching import aligned_empty
from doodle.batches.strokes import DrawnSplit, StrokeStream, concat, shard_paths
from doodle.core.params import ParamError, from_mapping
from doodle.drawing.augment import StrokeAugmentParams
from doodle.drawing.raster import RenderParams, render
from doodle.drawing.sequence import (
    PEN_DOWN,
    PEN_UP,
    STATE_CHANNEL,
    SequenceParams,
    encode_sequences,
    encoder_from_dict,
)
from doodle.drawing.strokes import STROKE_COLUMNS, StrokeBatch
from tests.conftest import generated_shards, one_epoch

ALL_ON = StrokeAugmentParams(scale=0.2, aspect=0.2, shift=0.1, rotation=20, shear=0.2, stroke_dropout=0.2)

#: Two strokes (3 points, then a dot), an empty drawing, and a 30-point zigzag of 3 strokes (all
#: within 30..220, so a shift of 20 stays on the canvas).
DRAWINGS = [
    [[[10, 20, 30], [40, 50, 60]], [[100], [200]]],
    [],
    [
        [[30 + (7 * k) % 190 for k in range(a, a + 10)], [30 + (13 * k) % 190 for k in range(a, a + 10)]]
        for a in (0, 10, 20)
    ],
]


def batch() -> StrokeBatch:
    return StrokeBatch.from_lists(DRAWINGS)


def expected(drawing, length, time=False, position=False):
    """The encoding of one drawing, written out point by point (float64, compared with a tolerance)."""
    points = [(x, y, k == len(xs) - 1) for xs, ys in drawing for k, (x, y) in enumerate(zip(xs, ys))]
    out = np.zeros((length, 3 + time + 2 * position))
    prev = (127.5, 127.5)
    for i, (x, y, last) in enumerate(points[:length]):
        out[i, :3] = (x - prev[0]) / 255, (y - prev[1]) / 255, 2.0 if last else 1.0
        if time:
            out[i, 3] = i / (len(points) - 1) if len(points) > 1 else 0.0
        if position:
            out[i, -2:] = (x - 127.5) / 255, (y - 127.5) / 255
        prev = (x, y)
    return out


@pytest.mark.parametrize("time, position", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("length", [8, 16, 64])
def test_each_point_is_its_offset_its_pen_state_its_time_and_position(length, time, position):
    p = SequenceParams(length, time=time, position=position)
    got = encode_sequences(batch(), p)
    assert got.dtype == np.float32 and got.shape == (3, length, 3 + time + 2 * position) == (3, *p.shape())
    for i, drawing in enumerate(DRAWINGS):
        np.testing.assert_allclose(got[i], expected(drawing, length, time, position), atol=1e-6)
    # the mask: state > 0 on every kept point, padding all zero, the first max_points points kept
    counts = [sum(len(xs) for xs, _ in d) for d in DRAWINGS]
    assert np.array_equal((got[..., STATE_CHANNEL] > 0).sum(1), np.minimum(counts, length))
    valid = got[..., STATE_CHANNEL] > 0
    assert not got[~valid].any()
    assert set(np.unique(got[..., STATE_CHANNEL])) <= {0.0, PEN_DOWN, PEN_UP}
    # the offsets add up to the positions (relative to the canvas centre)
    pos = np.cumsum(got[2, :, :2], axis=0)[: min(30, length)] * 255 + 127.5
    xs = [x for s in DRAWINGS[2] for x in s[0]][:length]
    np.testing.assert_allclose(pos[:, 0], xs, atol=1e-3)


def test_a_one_point_drawing_has_time_zero_and_ends_a_stroke():
    got = encode_sequences(StrokeBatch.from_lists([[[[5], [9]]]]), SequenceParams(8, time=True))
    np.testing.assert_allclose(got[0, 0], [(5 - 127.5) / 255, (9 - 127.5) / 255, PEN_UP, 0.0], atol=1e-6)
    assert not got[0, 1:].any()


def test_offsets_need_not_start_at_zero_and_out_takes_a_slice():
    b = batch()
    p = SequenceParams(16, time=True)
    whole = encode_sequences(b, p)
    view = StrokeBatch(b.x, b.y, b.point_offsets, b.stroke_offsets[1:])  # drawings 1 and 2, offsets from 2
    assert np.array_equal(encode_sequences(view, p), whole[1:])
    assert np.array_equal(encode_sequences(b.take([2, 0]), p), whole[[2, 0]])
    out = np.full((5, *p.shape()), 7.0, np.float32)
    encode_sequences(view, p, out=out[1:3])
    assert np.array_equal(out[1:3], whole[1:]) and (out[[0, 3, 4]] == 7).all()
    with pytest.raises(ValueError, match="float32"):
        encode_sequences(b, p, out=np.empty((3, 16, 4), np.float64))


def test_keep_drops_strokes_and_the_identity_is_no_transform():
    b = batch()
    p = SequenceParams(32, time=True)
    keep = np.array([False, True, True, False, True])  # drawing 0: only the dot; drawing 2: strokes 0, 2
    got = encode_sequences(b, p, keep=keep)
    left = [[DRAWINGS[0][1]], [], [DRAWINGS[2][0], DRAWINGS[2][2]]]
    assert np.array_equal(got, encode_sequences(StrokeBatch.from_lists(left), p))
    # on a view whose offsets do not start at 0, keep counts from its first stroke (as render does)
    view = StrokeBatch(b.x, b.y, b.point_offsets, b.stroke_offsets[1:])
    assert np.array_equal(encode_sequences(view, p, keep=keep[2:]), got[1:])
    identity = np.broadcast_to(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (3, 2, 3))
    assert np.array_equal(encode_sequences(b, p, affine=identity), encode_sequences(b, p))
    with pytest.raises(ValueError, match="one entry per stroke"):
        encode_sequences(b, p, keep=keep[:4])


def test_a_shift_moves_only_the_first_offset_and_the_canvas_clips():
    b = batch()
    p = SequenceParams(32)
    plain = encode_sequences(b, p)
    shift = np.tile(np.array([[1, 0, 10], [0, 1, -20]], np.float32), (3, 1, 1))
    got = encode_sequences(b, p, affine=shift)
    np.testing.assert_allclose(got[:, 0, :2] - plain[:, 0, :2], [[10 / 255, -20 / 255], [0, 0], [10 / 255, -20 / 255]])
    np.testing.assert_allclose(got[:, 1:], plain[:, 1:], atol=1e-6)
    # pushed far right, every x lands on the border: the first offset reaches it, the others are 0
    far = np.tile(np.array([[1, 0, 300], [0, 1, 0]], np.float32), (3, 1, 1))
    got = encode_sequences(b, p, affine=far)
    valid = got[..., STATE_CHANNEL] > 0
    np.testing.assert_allclose(got[[0, 2], 0, 0], (255 - 127.5) / 255, atol=1e-6)
    assert not got[:, 1:, 0][valid[:, 1:]].any()
    np.testing.assert_allclose(got[..., 1], plain[..., 1], atol=1e-6)


def test_both_encoders_share_one_interface():
    b = batch()
    r, s = RenderParams(32, channels=3), SequenceParams(64, time=True)
    assert (r.kind, r.dtype, s.kind, s.dtype) == ("image", np.uint8, "sequence", np.float32)
    keep = np.array([True, False, True, True, False])
    assert np.array_equal(r.encode(b, keep=keep), render(b, r, keep=keep))
    assert np.array_equal(s.encode(b, keep=keep), encode_sequences(b, s, keep=keep))
    for enc in (r, s):
        assert encoder_from_dict(enc.kind, enc.to_dict()) == enc
    assert encoder_from_dict("sequence", {"kind": "sequence", "max_points": 96, "time": False}) == SequenceParams(96)
    with pytest.raises(ValueError, match="unknown encoder kind"):
        encoder_from_dict("audio", {})
    with pytest.raises(ParamError, match=r"train\.sequence\.max_points"):
        encoder_from_dict("sequence", {"max_points": 5})


@pytest.mark.parametrize("raw", [{"max_points": 4}, {"max_points": 5000}, {"max_points": 1.5}])
def test_params_validation_names_max_points(raw):
    with pytest.raises(ParamError, match=r"train\.sequence\.max_points"):
        from_mapping(SequenceParams, raw, "train.sequence")


def test_aligned_empty_takes_a_dtype():
    x = aligned_empty((5, 7, 3), np.float32)
    assert x.dtype == np.float32 and x.shape == (5, 7, 3) and x.ctypes.data % 64 == 0 and x.flags.c_contiguous


# --------------------------------------------------------------------------- the stream
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return generated_shards(tmp_path_factory.mktemp("sequences"), per_class=60, row_group_rows=100)


def test_an_ordered_sequence_stream_is_the_encoding_of_the_shards(shards):
    p = SequenceParams(48, time=True)
    s = StrokeStream(shard_paths(shards, "train"), p, 37, shuffle=False)
    x, y = one_epoch(s)
    assert s.dtype == np.float32 and s.image_shape == (48, 4) and x.dtype == np.float32
    tables = [pq.read_table(path, columns=STROKE_COLUMNS) for path in shard_paths(shards, "train")]
    strokes = concat([StrokeBatch.from_arrow(*(t[c] for c in STROKE_COLUMNS)) for t in tables])
    assert np.array_equal(x, encode_sequences(strokes, p))
    images = StrokeStream(shard_paths(shards, "train"), RenderParams(32), 37, shuffle=False)
    assert images.dtype == np.uint8 and np.array_equal(y, one_epoch(images)[1])


def test_a_drawn_split_encodes_with_its_encoder(shards):
    p = SequenceParams(40)
    split = DrawnSplit(shard_paths(shards, "val"), p)
    want = one_epoch(StrokeStream(shard_paths(shards, "val"), p, 64, shuffle=False))
    got = np.concatenate(list(split.images))
    assert got.dtype == np.float32 and np.array_equal(got, want[0])
    assert np.array_equal(split.all_labels(), want[1]) and split.encoder == p


def test_a_sequence_stream_shuffles_and_augments_as_the_image_stream_does(shards):
    def run(encoder, seed=3, epoch=1, threads=2):
        s = StrokeStream(
            shard_paths(shards, "train"), encoder, 32, True, seed, steps=4, augment=ALL_ON, threads=threads
        )
        return one_epoch(s, epoch)

    p = SequenceParams(64)
    x, y = run(p)
    assert x.shape == (128, 64, 3) and x.dtype == np.float32
    assert all(b.ctypes.data % 64 == 0 for b, _ in StrokeStream(shard_paths(shards, "train"), p, 32, True).epoch(0))
    assert np.array_equal(y, run(RenderParams(32))[1])  # the same drawings in the same order
    assert np.array_equal(x, run(p, threads=1)[0]) and np.array_equal(x, run(p)[0])
    assert not np.array_equal(x, run(p, epoch=2)[0])
    plain = one_epoch(StrokeStream(shard_paths(shards, "train"), p, 32, True, 3, steps=4), 1)
    assert np.array_equal(y, plain[1]) and not np.array_equal(x, plain[0])


def test_tf_dataset_gives_float32_sequences(shards):
    pytest.importorskip("tensorflow")
    from doodle.batches.batching import tf_dataset

    s = StrokeStream(shard_paths(shards, "train"), SequenceParams(32), 20, True, seed=1, steps=2, augment=ALL_ON)
    got = list(tf_dataset(s, repeat=True).take(2).as_numpy_iterator())
    want = [b for _, b in zip(range(2), s.forever(0))]
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.float32 and gx.shape == (20, 32, 3)
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)


# --------------------------------------------------------------------------- the models
@pytest.mark.parametrize("name", ["stroke_rnn", "stroke_conv1d"])
def test_stroke_models_ignore_padding_and_reload(name, tmp_path):
    keras = pytest.importorskip("keras")
    from doodle.models import AugmentParams, build_model, reads_images

    assert not reads_images(name) and reads_images("cnn")
    long = build_model(name, (128, 3), 7, width=0.25)
    short = build_model(name, (64, 3), 7, width=0.25)
    short.set_weights(long.get_weights())
    b = batch()
    x_long, x_short = SequenceParams(128).encode(b), SequenceParams(64).encode(b)
    p_long = np.asarray(long(x_long, training=False))
    assert p_long.shape == (3, 7)
    np.testing.assert_allclose(p_long.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(short(x_short, training=False)), p_long, atol=1e-4)
    # the rows past the mask are not read: garbage there (with state 0) changes nothing
    noisy = x_long.copy()
    pad = noisy[..., STATE_CHANNEL] == 0
    noisy[..., :2][pad] = 5.0
    np.testing.assert_allclose(np.asarray(long(noisy, training=False)), p_long, atol=1e-4)
    path = tmp_path / "m.keras"
    long.save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(np.asarray(again(x_long, training=False)), p_long, atol=1e-6)
    with pytest.raises(ValueError, match="train.stroke_augment"):
        build_model(name, (64, 3), 7, augment=AugmentParams(shift=0.1))
    with pytest.raises(ValueError, match="channels"):
        build_model(name, (64, 64, 1), 7)
