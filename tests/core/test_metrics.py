import keras
import numpy as np
import pytest

from doodle.core.metrics import map_at_3, map_at_3_reference, top_k
from doodle.train.keras_metrics import MapAt3, SmoothedSparseCrossentropy, map_at_3_per_sample

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


def _per_sample(loss, y, p) -> np.ndarray:
    return keras.ops.convert_to_numpy(loss.call(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(p)))


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.3, 1.0])
def test_label_smoothing_is_the_documented_mixture(eps):
    """Per sample: (1 - eps) * CE + eps * (mean over classes of -log p), i.e. cross-entropy against
    the target (1 - eps) * onehot + eps / n; the reduced loss is the batch mean."""
    rng = np.random.default_rng(7)
    n = 6
    p = rng.dirichlet(np.ones(n), 16).astype(np.float32)
    p[0] = [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]  # zeros are clipped to 1e-7, so the loss stays finite
    y = rng.integers(0, n, 16)
    y[0] = 0
    logp = np.log(np.clip(p.astype(np.float64), np.float32(1e-7), 1.0))
    ce = -logp[np.arange(len(y)), y]
    expected = (1 - eps) * ce + eps * (-logp).mean(axis=1)
    loss = SmoothedSparseCrossentropy(eps)
    np.testing.assert_allclose(_per_sample(loss, y, p), expected, rtol=1e-5)
    np.testing.assert_allclose(_per_sample(loss, y.reshape(-1, 1), p), expected, rtol=1e-5)  # (n, 1) labels too
    per_sample_api = SmoothedSparseCrossentropy(eps, reduction=None)(y, p)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(per_sample_api), expected, rtol=1e-5)
    assert float(keras.ops.convert_to_numpy(loss(y, p))) == pytest.approx(expected.mean(), rel=1e-5)
    if eps == 0.0:  # no smoothing is Keras' own sparse cross-entropy
        keras_ce = keras.losses.SparseCategoricalCrossentropy(reduction=None)(y[1:], p[1:])
        np.testing.assert_allclose(_per_sample(loss, y[1:], p[1:]), keras.ops.convert_to_numpy(keras_ce), rtol=1e-5)


def test_label_smoothing_moves_the_optimum_to_the_smoothed_target():
    """What smoothing is for: the loss is no longer lowest at a one-hot prediction but at the
    smoothed target (1 - eps + eps/n on the true class, eps/n elsewhere), where it equals that
    target's entropy; a uniform prediction costs log(n) whatever eps is."""
    n, eps = 5, 0.2
    loss = SmoothedSparseCrossentropy(eps)
    y = np.array([2])
    target = np.full((1, n), eps / n, np.float32)
    target[0, 2] += 1 - eps
    entropy = float(-(target * np.log(target)).sum())
    assert _per_sample(loss, y, target)[0] == pytest.approx(entropy, rel=1e-5)
    rng = np.random.default_rng(3)
    for _ in range(20):  # any other prediction costs more (Gibbs' inequality)
        q = np.clip(target + rng.normal(0, 0.03, target.shape), 1e-3, None).astype(np.float32)
        q /= q.sum()
        assert _per_sample(loss, y, q)[0] > entropy
    sharper = np.full((1, n), 0.01, np.float32)
    sharper[0, 2] = 1 - 0.01 * (n - 1)
    unsmoothed = SmoothedSparseCrossentropy(0.0)
    assert _per_sample(unsmoothed, y, sharper)[0] < _per_sample(unsmoothed, y, target)[0]  # plain CE prefers sharp
    assert _per_sample(loss, y, sharper)[0] > _per_sample(loss, y, target)[0]  # smoothed CE does not
    uniform = np.full((1, n), 1 / n, np.float32)
    for e in (0.0, 0.1, 0.5, 1.0):
        assert _per_sample(SmoothedSparseCrossentropy(e), y, uniform)[0] == pytest.approx(np.log(n), rel=1e-6)
