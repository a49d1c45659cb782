import keras
import numpy as np
import pytest

from doodle.models import ARCHITECTURES, AugmentParams, build_model
from doodle.models.common import input_head

COMBOS = [(32, 1), (64, 3), (128, 1), (128, 3)]


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("size,ch", COMBOS)
def test_small_builders_output_shape(name, size, ch):
    m = build_model(name, (size, size, ch), 17, width=0.25)
    assert m.output_shape == (None, 17)
    out = np.asarray(m(np.zeros((2, size, size, ch), np.uint8)))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet", "efficientnet"])
@pytest.mark.parametrize("size,ch", [(32, 1), (64, 3)])
def test_backbones_output_shape(name, size, ch):
    m = build_model(name, (size, size, ch), 340, width=0.25 if name == "mobilenet" else 1.0)
    assert m.output_shape == (None, 340)


def test_cnn_full_width_is_about_five_million_params():
    assert 3.5e6 < build_model("cnn", (64, 64, 1), 340).count_params() < 6e6


def test_augmentation_only_in_training():
    m = build_model(
        "cnn",
        (32, 32, 1),
        5,
        width=0.25,
        augment=AugmentParams(shift=0.1, zoom=0.1, rotation=0.05, shear=0.1, flip=True),
    )
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1), dtype=np.uint8)
    a = np.asarray(m(x, training=False))
    assert np.allclose(a, np.asarray(m(x, training=False)))
    assert {"aug_flip", "aug_shift", "aug_zoom", "aug_rotation", "aug_shear"} <= {layer.name for layer in m.layers}


@pytest.mark.parametrize("name", [n for n, a in ARCHITECTURES.items() if a.draws_images and a.min_size > 8])
def test_an_image_model_builds_at_its_min_size_and_not_below(name):
    """The registry's min_size is what the check stage refuses below, in one line, before any training."""
    build_model(name, (ARCHITECTURES[name].min_size,) * 2 + (1,), 5, width=0.25)
    with pytest.raises(ValueError):
        below = ARCHITECTURES[name].min_size - 1
        build_model(name, (below, below, 1), 5, width=0.25)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet", (32, 32, 1), 3)


def _doodles(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Ink (random, not symmetric) in the middle of a black canvas, with a margin wider than any
    shift below, so moving it loses none."""
    x = np.zeros((n, size, size, 1), np.uint8)
    x[:, 10:22, 9:20, 0] = np.random.default_rng(seed).integers(1, 256, (n, 12, 11))
    return x


def _rescaled(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) * np.float32(1 / 255)  # what keras.layers.Rescaling(1/255) computes


def _head(augment: AugmentParams, size: int = 32) -> keras.Model:
    inputs, x = input_head((size, size, 1), augment, seed=1)
    return keras.Model(inputs, x)


def _ink_centre(images: np.ndarray) -> np.ndarray:
    """(n, 2) centre of mass (row, column) of each image's ink."""
    rows, cols = np.indices(images.shape[1:3])
    ink = images[..., 0].sum(axis=(1, 2))
    return np.stack([(images[..., 0] * g).sum(axis=(1, 2)) / ink for g in (rows, cols)], axis=1)


def test_flip_mirrors_some_images_in_training_and_none_in_inference():
    x = _doodles(32)
    m = _head(AugmentParams(flip=True))
    out = np.asarray(m(x, training=True))
    plain = [np.array_equal(o, r) for o, r in zip(out, _rescaled(x))]
    mirrored = [np.array_equal(o, r[:, ::-1]) for o, r in zip(out, _rescaled(x))]
    assert all(a != b for a, b in zip(plain, mirrored))  # each image is one or the other, exactly
    assert 0 < sum(mirrored) < len(x)  # a per-image coin: both happen over a batch
    np.testing.assert_array_equal(np.asarray(m(x, training=False)), _rescaled(x))
    np.testing.assert_array_equal(m.predict(x, verbose=0), _rescaled(x))  # predict runs in inference mode


def test_shift_moves_the_ink_within_its_range_and_keeps_its_amount():
    shift, size = 0.2, 32
    x = _doodles(32, size)
    m = _head(AugmentParams(shift=shift), size)
    out = np.asarray(m(x, training=True))
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), _rescaled(x).sum(axis=(1, 2, 3)), rtol=1e-3)
    moved = _ink_centre(out) - _ink_centre(_rescaled(x))
    assert np.abs(moved).max() <= shift * size + 0.01  # at most shift * size pixels each way
    assert (np.abs(moved).max(axis=1) > 0.1).mean() > 0.9  # nearly every image moves
    assert (moved.min(axis=0) < -1).all() and (moved.max(axis=0) > 1).all()  # up and down, left and right
    np.testing.assert_array_equal(np.asarray(m(x, training=False)), _rescaled(x))


def test_full_augmentation_of_a_built_model_changes_images_only_in_training():
    """Through build_model: the layers from the input to the last augmentation change (almost)
    every image in training mode and are exactly the rescaling in inference mode. (A bare
    ``model(x)`` with no training flag counts as training for Keras 3's augmentation layers;
    the project's prediction passes training=False.)"""
    augment = AugmentParams(shift=0.1, zoom=0.1, rotation=0.05, shear=0.1, flip=True)
    m = build_model("cnn", (32, 32, 1), 5, width=0.25, augment=augment)
    head = keras.Model(m.inputs, m.get_layer("aug_shear").output)
    x = _doodles(16)
    changed = [not np.allclose(o, r, atol=1e-3) for o, r in zip(np.asarray(head(x, training=True)), _rescaled(x))]
    assert sum(changed) >= len(x) - 1
    np.testing.assert_array_equal(np.asarray(head(x, training=False)), _rescaled(x))


def test_seed_cnn_has_the_published_structure():
    """Two 3x3 convs a block (128/128 with the first strided and BatchNorm after it, 256/256,
    512/512), zero padding, 2x2 max pooling and dropout 0.25 each; a 2x2 conv to 1024, dropout,
    Flatten, dropout 0.5 and the softmax."""
    from keras import layers

    m = build_model("seed_cnn", (64, 64, 1), 340)
    convs = [la for la in m.layers if isinstance(la, layers.Conv2D)]
    assert [c.filters for c in convs] == [128, 128, 256, 256, 512, 512, 1024]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 6 + [(2, 2)]
    assert [c.strides for c in convs] == [(2, 2)] + [(1, 1)] * 6
    kinds = [type(la).__name__ for la in m.layers]
    assert kinds.index("BatchNormalization") == kinds.index("Conv2D") + 1  # right after the strided conv
    assert kinds.count("ZeroPadding2D") == 3 and kinds.count("MaxPooling2D") == 3
    drops = [la.rate for la in m.layers if isinstance(la, layers.Dropout)]
    assert drops == [0.25, 0.25, 0.25, 0.25, 0.5]
    assert kinds[-3:] == ["Flatten", "Dropout", "Dense"] and m.output_shape == (None, 340)
    assert all(p.pool_size == (2, 2) for p in m.layers if isinstance(p, layers.MaxPooling2D))
    assert 7.5e6 < m.count_params() < 8.5e6
    small = build_model("seed_cnn", (32, 32, 1), 15, width=0.25)  # builds at small sizes too
    assert small.output_shape == (None, 15)
