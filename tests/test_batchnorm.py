"""BatchNorm statistics after short runs, and the near-chance warning."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from doodle.batchnorm import ChanceWatch, batchnorm_layers, near_chance, recalibrate
from doodle.models import build_model


def tiny_bn_model():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(4, name="hidden")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def test_recalibration_is_the_exact_average_over_the_batches():
    keras.utils.set_random_seed(0)
    model = tiny_bn_model()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(5.0, 3.0, (32, 8))).astype("float32") for _ in range(5)]
    assert recalibrate(model, batches) == 5
    features = keras.Model(model.input, model.get_layer("hidden").output)
    outs = [np.asarray(features(b)) for b in batches]
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([o.mean(0) for o in outs], 0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([o.var(0) for o in outs], 0), rtol=1e-4)
    assert bn.momentum == pytest.approx(0.99)  # restored


def test_models_without_batchnorm_are_left_alone():
    model = build_model("cnn", (32, 32, 1), 3, width=0.125)
    assert batchnorm_layers(model) == [] and recalibrate(model, [np.zeros((2, 32, 32, 1), np.uint8)]) == 0


@pytest.mark.parametrize("name", ["seed_cnn", "mobilenet", "efficientnet"])
def test_every_batchnorm_model_is_found_nested_backbones_included(name):
    model = build_model(name, (32, 32, 1), 3, width=0.25)
    assert len(batchnorm_layers(model)) >= 1


def test_short_training_leaves_a_broken_inference_model_that_recalibration_fixes():
    """The failure the pipeline hit on real drawings, in miniature: a few steps of training
    leave moving statistics near their start, so inference-mode predictions on the training
    images themselves are poor; recomputed statistics make them agree with training mode."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    n, classes = 512, 4
    y = rng.integers(0, classes, n)
    x = (rng.normal(0, 1, (n, 32, 32, 1)) * 20 + 120 + y[:, None, None, None] * 30).clip(0, 255).astype("uint8")
    model = build_model("seed_cnn", (32, 32, 1), classes, width=0.125)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    bn = batchnorm_layers(model)[0]
    before = np.asarray(bn.moving_mean).copy()
    acc_before = float((np.asarray(model.predict(x, verbose=0)).argmax(1) == y).mean())
    recalibrate(model, [x[i : i + 64] for i in range(0, n, 64)])
    acc_after = float((np.asarray(model.predict(x, verbose=0)).argmax(1) == y).mean())
    assert not np.allclose(before, np.asarray(bn.moving_mean))
    assert acc_after >= acc_before + 0.2, (acc_before, acc_after)  # measured: 0.26 -> 0.53


def test_near_chance_warning():
    assert near_chance(0.9, 0.07, 1 / 15) and not near_chance(0.9, 0.5, 1 / 15) and not near_chance(0.2, 0.07, 1 / 15)
    printed = []
    watch = ChanceWatch(15, printer=lambda *a, **k: printed.append(a[0]))
    watch.on_epoch_end(0, {"accuracy": 0.92, "val_accuracy": 0.066})
    watch.on_epoch_end(1, {"accuracy": 0.92, "val_accuracy": 0.61})
    assert watch.warnings == 1 and "near chance" in printed[0] and "epoch 1" in printed[0]
