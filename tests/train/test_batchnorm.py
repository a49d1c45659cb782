"""BatchNorm statistics after short runs, and the near-chance warning."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from doodle.models import build_model
from doodle.train.batchnorm import ChanceWatch, RecalibrateBatchNorm, batchnorm_layers, near_chance, recalibrate


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
    # the truth, counted another way: each BatchNormalization layer owns one moving-mean variable
    owned = [w for w in model.weights if w.path.endswith("moving_mean")]
    assert len(batchnorm_layers(model)) == len(owned) >= {"seed_cnn": 1, "mobilenet": 20, "efficientnet": 20}[name]


def test_short_training_leaves_a_broken_inference_model_that_recalibration_fixes():
    """The failure the pipeline hit on real drawings, in miniature: a few steps of training leave
    the moving statistics near their start (mean 0, variance 1), so in inference mode BatchNorm
    does not normalise what the trained layers feed it; recomputed statistics do. Asserted on the
    statistics themselves, which every CPU computes alike, not on an accuracy (0.26 -> 0.53 on
    one CPU, 0.53 -> 0.53 on another)."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    n, classes = 512, 4
    y = rng.integers(0, classes, n)
    x = (rng.normal(0, 1, (n, 32, 32, 1)) * 20 + 120 + y[:, None, None, None] * 30).clip(0, 255).astype("uint8")
    model = build_model("seed_cnn", (32, 32, 1), classes, width=0.125)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)  # 16 steps: the averages moved ~15% of the way
    bn = batchnorm_layers(model)[0]
    fed = np.asarray(keras.Model(model.input, bn.input)(x))  # what the trained layers feed the BatchNorm
    true_mean, true_var = fed.mean(axis=(0, 1, 2)), fed.var(axis=(0, 1, 2))
    live = true_var > 1e-6 * true_var.max()  # channels a ReLU left (nearly) silent carry no signal

    def off(moving, truth):  # relative distance of the moving statistics from the true ones
        return float(np.linalg.norm((np.asarray(moving) - truth)[live]) / np.linalg.norm(truth[live]))

    assert off(bn.moving_mean, true_mean) > 0.5 and off(bn.moving_variance, true_var) > 0.5
    batches = [x[i : i + 64] for i in range(0, n, 64)]
    assert recalibrate(model, batches) == len(batches)
    assert off(bn.moving_mean, true_mean) < 0.01  # equal batches: the average of their means is the mean
    assert off(bn.moving_variance, true_var) < 0.1  # the average within-batch variance, close to the whole
    # Inference mode now normalises: BatchNorm's output has (close to) the mean its beta sets.
    normalised = np.asarray(keras.Model(model.input, bn.output)(x)).mean(axis=(0, 1, 2))
    assert np.abs(normalised - np.asarray(bn.beta))[live].max() < 0.05 * np.asarray(bn.gamma)[live].max()


def test_near_chance_warning():
    assert near_chance(0.9, 0.07, 1 / 15) and not near_chance(0.9, 0.5, 1 / 15) and not near_chance(0.2, 0.07, 1 / 15)
    printed = []
    watch = ChanceWatch(15, printer=lambda *a, **k: printed.append(a[0]))
    watch.on_epoch_end(0, {"accuracy": 0.92, "val_accuracy": 0.066})
    watch.on_epoch_end(1, {"accuracy": 0.92, "val_accuracy": 0.61})
    assert watch.warnings == 1 and "near chance" in printed[0] and "epoch 1" in printed[0]


def test_recalibration_runs_once_an_epoch_after_its_steps_and_before_its_validation():
    keras.utils.set_random_seed(0)
    model = tiny_bn_model()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)
    events = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            events.append("step")

        def on_test_batch_begin(self, batch, logs=None):
            events.append("validate")

    recal = RecalibrateBatchNorm(lambda epoch: events.append(f"recalibrate {epoch}") or [x[:16]])
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), callbacks=[recal, Watch()], verbose=0)
    first = events.index("recalibrate 0")
    assert events[:first] == ["step"] * 4 and events[first + 1] == "validate"
    assert [e for e in events if e.startswith("recalibrate")] == ["recalibrate 0", "recalibrate 1"]
    events.clear()
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[recal], verbose=0)  # no validation: at the epoch's end
    assert events == ["recalibrate 0"]
    model.evaluate(x, y, callbacks=[recal], verbose=0)  # outside fit: nothing pending
    assert events == ["recalibrate 0"] and recal.seconds > 0
