import keras
import numpy as np
import pytest

from doodle.metrics import MapAt3, SmoothedSparseCrossentropy, map_at_3, map_at_3_per_sample, map_at_3_reference, top_k

# (true label, scores over 5 classes, expected reciprocal rank)
CASES = [
    (0, [0.9, 0.05, 0.03, 0.01, 0.01], 1.0),  # first
    (1, [0.5, 0.3, 0.1, 0.05, 0.05], 1 / 2),  # second
    (2, [0.5, 0.3, 0.1, 0.05, 0.05], 1 / 3),  # third
    (4, [0.5, 0.3, 0.1, 0.06, 0.04], 0.0),  # absent
    (1, [0.25, 0.25, 0.25, 0.25, 0.0], 1 / 2),  # tie: lower index ranks first
    (3, [0.25, 0.25, 0.25, 0.25, 0.0], 0.0),  # tie pushes class 3 out of the top 3
]


def test_keras_numpy_and_reference_agree_on_hand_made_cases():
    y = np.array([c[0] for c in CASES])
    p = np.array([c[1] for c in CASES], np.float32)
    expected = np.array([c[2] for c in CASES])
    per = keras.ops.convert_to_numpy(map_at_3_per_sample(y, p))
    np.testing.assert_allclose(per, expected, atol=1e-6)
    ref = map_at_3_reference(y.tolist(), top_k(p, 3).tolist())
    assert ref == pytest.approx(expected.mean())
    assert map_at_3(y, p) == pytest.approx(expected.mean())
    m = MapAt3()
    m.update_state(y, p)
    assert float(m.result()) == pytest.approx(expected.mean(), abs=1e-6)


def test_reference_counts_only_first_hit():
    assert map_at_3_reference([1], [[1, 1, 1]]) == 1.0
    assert map_at_3_reference([], []) == 0.0


def test_label_smoothing_loss():
    y = np.array([0, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    plain = keras.ops.convert_to_numpy(SmoothedSparseCrossentropy(0.0)(y, p))
    ce = keras.ops.convert_to_numpy(keras.losses.SparseCategoricalCrossentropy()(y, p))
    assert plain == pytest.approx(ce, rel=1e-5)
    smooth = keras.ops.convert_to_numpy(SmoothedSparseCrossentropy(0.1)(y, p))
    assert smooth > plain
