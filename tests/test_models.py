import numpy as np
import pytest

from doodle.models import AugmentParams, build_model

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


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet", (32, 32, 1), 3)
