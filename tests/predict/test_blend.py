"""Heterogeneous ensembles: the blend weights (doodle.predict.blend), weighted means over models of
different input kinds (doodle.predict.inference), and predict.weights (doodle.predict.run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from doodle.core.metrics import map_at_3
from doodle.core.params import ParamError, from_mapping
from doodle.drawing.raster import RenderParams
from doodle.drawing.sequence import SequenceParams
from doodle.drawing.strokes import StrokeBatch
from doodle.predict.blend import candidates, check_held_out, fit_weights
from doodle.predict.inference import TrainedModel, model_encoder, predict_probs
from doodle.predict.members import Group, blend_weights, file_weights, resolve_groups
from doodle.predict.run import PredictParams


def one_hot_probs(labels: np.ndarray, classes: int, right: np.ndarray, rng) -> np.ndarray:
    """Probabilities that rank the true class first where ``right``, a random wrong class elsewhere."""
    wrong = (labels + rng.integers(1, classes, len(labels))) % classes
    top = np.where(right, labels, wrong)
    probs = np.full((len(labels), classes), 0.01)
    probs[np.arange(len(labels)), top] = 0.9
    return probs / probs.sum(axis=1, keepdims=True)


def test_candidates_cover_the_simplex():
    grid = list(candidates(3, 0.25))
    assert len(grid) == 15  # C(4 + 2, 2)
    assert all(np.isclose(w.sum(), 1) and (w >= 0).all() for w in grid)
    assert len(list(candidates(2))) == 21


def test_fit_weights_prefers_the_better_model_and_beats_both_when_they_err_apart():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    a_right = rng.random(2000) < 0.8
    b_right = ~a_right | (rng.random(2000) < 0.3)  # b is right where a is wrong, and sometimes else
    a, b = one_hot_probs(labels, 10, a_right, rng), one_hot_probs(labels, 10, b_right, rng)
    b *= 0.5  # b is less confident: a blend must weigh it up to let it decide where a is wrong
    b += 0.05
    weights, score = fit_weights([a, b], labels)
    assert np.isclose(weights.sum(), 1)
    assert score >= max(map_at_3(labels, a), map_at_3(labels, b))
    assert score == pytest.approx(map_at_3(labels, weights[0] * a + weights[1] * b))


def threshold_pair(above: list[float], below: list[float], classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Two models' probabilities, one row per threshold, true class 0 and a decoy, class 1. A blend
    with weight ``w`` on the first ranks the true class first on an ``above`` row iff ``w`` > its
    threshold, on a ``below`` row iff ``w`` < it, and second otherwise (MAP@3 1/2)."""
    a, b = np.zeros((2, len(above) + len(below), classes))
    for row, (thr, sign) in enumerate([(t, 1) for t in above] + [(t, -1) for t in below]):
        # margins (true - decoy): a's is sign * (1 - thr), b's is -sign * thr, so the blend's is sign * (w - thr)
        a[row, :2] = 0.5 + sign * (1 - thr) / 2, 0.5 - sign * (1 - thr) / 2
        b[row, :2] = 0.5 - sign * thr / 2, 0.5 + sign * thr / 2
    return a, b


def test_fit_weights_finds_the_one_blend_that_beats_each_model_and_equal_weights():
    """Half the rows are right only when a's weight is above 0.62, the other half only below 0.78:
    each model alone and the equal blend score 0.75 (right on one half, second on the other); only a
    weight of a in (0.62, 0.78) is right on both, and of the grid's 0.65, 0.70 and 0.75 the search
    keeps the most even. A search that returns equal weights or the best single model fails."""
    a, b = threshold_pair(above=[0.62] * 10, below=[0.78] * 10)
    labels = np.zeros(20, np.int64)
    assert map_at_3(labels, a) == map_at_3(labels, b) == map_at_3(labels, (a + b) / 2) == 0.75
    weights, score = fit_weights([a, b], labels)
    np.testing.assert_allclose(weights, [0.65, 0.35])
    assert score == 1.0
    # a third model, always backing the decoy: of the weights right on every row, the most even
    # gives it 0.05 (on the grid of 0.05; 0.10 already loses the first half)
    c = np.zeros_like(a)
    c[:, :2] = 0.1, 0.9
    weights, score = fit_weights([a, b, c], labels)
    np.testing.assert_allclose(weights, [0.65, 0.30, 0.05])
    assert score == 1.0


def test_beyond_three_models_the_ascent_climbs_to_the_blend_that_is_right_everywhere():
    """Four models, two copies of each of a pair: rows right only when the pair's first model holds
    more than 0.52, 0.57, 0.62 of the weight, and rows right only below 0.78. Equal weights (0.5)
    miss the first three; each step of 0.05 towards the first model wins one, up to 0.65."""
    a, b = threshold_pair(above=[0.52, 0.57, 0.62], below=[0.78] * 3)
    labels = np.zeros(6, np.int64)
    assert map_at_3(labels, (a + b) / 2) == 0.75
    weights, score = fit_weights([a, b, a, b], labels)
    assert score == 1.0 and weights[0] + weights[2] == pytest.approx(0.65)


def test_fit_weights_keeps_equal_weights_on_a_tie_and_runs_coordinate_ascent_beyond_three():
    labels = np.arange(6) % 3
    same = np.eye(3)[labels]
    weights, _ = fit_weights([same, same], labels)
    assert weights.tolist() == [0.5, 0.5]
    rng = np.random.default_rng(1)
    many = [one_hot_probs(labels, 3, rng.random(6) < p, rng) for p in (0.2, 0.9, 0.3, 0.1)]
    weights, score = fit_weights(many, labels)
    assert np.isclose(weights.sum(), 1) and score >= map_at_3(labels, sum(many) / 4)


def test_a_member_that_trained_on_the_validation_shards_is_not_fitted_on_them(tmp_path):
    model = TrainedModel(tmp_path / "m.keras", None, ["a"], RenderParams())
    manifest = {"val_shards": [3]}
    check_held_out([model], [{}], manifest)  # a single model held out shard.val_shards
    check_held_out([model], [{"member": {"val_shards": [3, 5]}}], manifest)
    with pytest.raises(ParamError, match=r"predict.weights.*trained on"):
        check_held_out([model], [{"member": {"val_shards": [1]}}], manifest)


def test_predict_weights_params_are_checked():
    two = ["models/a.keras", "models/b.keras"]
    from_mapping(PredictParams, {"weights": "fit"}, "predict")
    from_mapping(PredictParams, {"weights": [1, 0.5], "models": two}, "predict")
    for bad in ("best", [0, 0], [-1, 2], ["a"]):
        with pytest.raises(ParamError, match="predict.weights"):
            from_mapping(PredictParams, {"weights": bad, "models": two}, "predict")
    from_mapping(PredictParams, {"weights": [1, 1]}, "predict")  # models: auto, one weight per named model
    groups = [Group(f"m{i}", [TrainedModel(f"m{i}.keras", None, ["a"], RenderParams())]) for i in range(2)]
    with pytest.raises(ParamError, match=r"3 weights for 2 models \(m0, m1\)"):
        blend_weights([1, 1, 1], 100, 8, False, groups, Path("data/shards"))
    with pytest.raises(ParamError, match="3 weights for 1 models"):
        blend_weights([1, 1, 1], 100, 8, False, groups[:1], Path("data/shards"))  # not ignored with one model left
    assert blend_weights([3, 1], 100, 8, False, groups, Path("data/shards")) == {"weights": [3.0, 1.0]}
    assert blend_weights("fit", 100, 8, False, groups[:1], Path("none")) == {}  # one model: nothing to fit


def test_a_models_ensemble_members_share_its_weight_in_the_blend(tmp_path):
    """A 3-seed model counts as one model: its files share its weight, so the mean over every file is the
    weighted mean of the models' own means; predict.models: auto finds each named model's files."""
    model = lambda n: TrainedModel(tmp_path / n, None, ["a"], RenderParams())  # noqa: E731
    groups = [Group("seeds", [model("s0"), model("s1"), model("s2")]), Group("one", [model("o")])]
    assert file_weights(groups, [0.6, 0.4]) == pytest.approx([0.2, 0.2, 0.2, 0.4])
    assert file_weights(groups, None) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 0.5])
    for name, files in (
        ("seeds", ["members/fold0-seed0.keras", "members/fold0-seed1.keras"]),
        ("one", ["model.keras"]),
    ):
        for f in files:
            (tmp_path / "models" / name / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "models" / name / f).touch()
    (tmp_path / "models/seeds/model.keras").touch()  # a copy of the reference member: not counted twice
    found = resolve_groups("auto", ["seeds", "one"], tmp_path / "models")
    assert [(n, [p.relative_to(tmp_path).as_posix() for p in ps]) for n, ps in found] == [
        ("seeds", ["models/seeds/members/fold0-seed0.keras", "models/seeds/members/fold0-seed1.keras"]),
        ("one", ["models/one/model.keras"]),
    ]
    assert resolve_groups(["models/x.keras"], [], Path("none")) == [("models/x.keras", [Path("models/x.keras")])]
    with pytest.raises(ParamError, match="predict.models: models/x.keras listed twice"):
        resolve_groups(["models/x.keras", "models/x.keras"], [], Path("none"))


def test_fitting_weights_on_image_shards_is_refused_by_name(tmp_path):
    from doodle.predict.blend import validation_rows

    manifest = {"content": "images", "source_kind": "digits", "val_shards": [0], "files": ["shard-000.parquet"]}
    with pytest.raises(ParamError, match="predict.weights: fit .* hold images .*give the weights as a list"):
        validation_rows(tmp_path, manifest, 100)


class Constant:
    """A stand-in model: fixed probabilities whatever the input, and the inputs it was given."""

    def __init__(self, probs):
        self.probs, self.seen = np.asarray(probs, np.float32), []
        self.output_shape = (None, len(probs))

    def __call__(self, x, training=False):
        self.seen.append(np.array(x))
        return np.tile(self.probs, (len(x), 1))


def test_models_of_different_kinds_are_weighted_and_each_input_is_made_once():
    strokes = StrokeBatch.from_lists([[([10, 50, 90], [20, 20, 60])], [([0, 255], [0, 255]), ([5], [5])]])
    image, sequence = RenderParams(size=16), SequenceParams(max_points=8)
    cnn1, cnn2, rnn = Constant([1, 0]), Constant([1, 0]), Constant([0, 1])
    models = [
        TrainedModel("a", cnn1, ["x", "y"], image),
        TrainedModel("b", cnn2, ["x", "y"], image),
        TrainedModel("c", rnn, ["x", "y"], sequence),
    ]
    probs = predict_probs(models, strokes, batch_size=64, tta_flip=False, weights=[1, 1, 2])
    assert np.allclose(probs, [[0.5, 0.5], [0.5, 0.5]])
    assert cnn1.seen[0].shape == (2, 16, 16, 1) and rnn.seen[0].shape == (2, 8, 3)
    assert cnn1.seen[0] is not cnn2.seen[0] and np.array_equal(cnn1.seen[0], cnn2.seen[0])
    assert np.allclose(predict_probs(models, strokes, 64, False), [[2 / 3, 1 / 3]] * 2)  # equal weights


def test_the_mirror_of_a_sequence_is_the_sequence_of_the_mirrored_drawing():
    drawing = [([10, 50, 90], [20, 20, 60]), ([200, 180], [100, 30])]
    mirror = [([255 - x for x in xs], ys) for xs, ys in drawing]
    params = SequenceParams(max_points=8, time=True, position=True)
    encoded = params.encode(StrokeBatch.from_lists([drawing]))
    assert np.allclose(params.mirror(encoded), params.encode(StrokeBatch.from_lists([mirror])), atol=1e-6)
    images = RenderParams(size=16).encode(StrokeBatch.from_lists([drawing]))
    assert np.array_equal(RenderParams(size=16).mirror(images), images[:, :, ::-1])


def test_a_model_says_its_input_in_its_metadata_and_old_metadata_means_images():
    render = RenderParams(size=32).to_dict()
    assert model_encoder({"render": render}) == RenderParams(size=32)
    meta = {"render": render, "input": {"kind": "sequence", "max_points": 64, "time": True}}
    assert model_encoder(meta) == SequenceParams(max_points=64, time=True)
