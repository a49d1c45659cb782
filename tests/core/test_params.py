"""params.yaml accepts every number a user or DVC writes: YAML 1.2 floats (``3e-5``, what
``dvc exp run -S`` writes), ints where floats are expected, whole floats where ints are, and a
wrong type is named in words."""

from __future__ import annotations

import shutil

import pytest

from doodle.core.params import ParamError, from_mapping, load_section, read_params
from doodle.train.params import TrainParams
from tests.conftest import REPO


@pytest.mark.parametrize(
    "text,value",
    [("3e-5", 3e-5), ("3e-05", 3e-5), ("1E3", 1000.0), ("1.5e3", 1500.0), ("-2e-1", -0.2), (".5e1", 5.0)],
)
def test_yaml_12_floats_are_numbers(tmp_path, text, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  learning_rate: {text}\n  epochs: 3\n")
    raw = read_params(path)
    assert raw["train"]["learning_rate"] == pytest.approx(value) and isinstance(raw["train"]["learning_rate"], float)
    assert raw["train"]["epochs"] == 3 and isinstance(raw["train"]["epochs"], int)


def test_strings_that_only_look_numeric_stay_strings(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("a:\n  x: e5\n  y: 1e\n  z: '3e-5'\n  v: 1.2.3\n")
    assert read_params(path)["a"] == {"x": "e5", "y": "1e", "z": "3e-5", "v": "1.2.3"}


def test_values_written_by_dvc_set_param_load(tmp_path):
    """Round trip through DVC's own ``-S`` writer (dvc exp run -S uses apply_overrides)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(
        path,
        ["train.learning_rate=3e-5", "train.label_smoothing=0", "train.epochs=7", "train.time_budget_s=3.6e3"],
    )
    assert "3e-05" in path.read_text()  # what DVC writes, and what PyYAML's YAML 1.1 reads as a string
    train = load_section(TrainParams, "train", path=path)
    assert train.learning_rate == pytest.approx(3e-5) and train.label_smoothing == 0 and train.epochs == 7
    assert train.time_budget_s == 3600 and isinstance(train.time_budget_s, int)


def test_wrong_type_is_named_in_words():
    with pytest.raises(ParamError, match=r"train\.learning_rate = 'fast': expected a number$"):
        from_mapping(TrainParams, {"learning_rate": "fast"}, "train")
    with pytest.raises(ParamError, match=r"train\.time_budget_s = 'x': expected a whole number or null$"):
        from_mapping(TrainParams, {"time_budget_s": "x"}, "train")
    with pytest.raises(ParamError, match=r"train\.epochs = 2\.5: expected a whole number$"):
        from_mapping(TrainParams, {"epochs": 2.5}, "train")
    with pytest.raises(ParamError, match=r"train\.mixed_precision = 1: expected true or false$"):
        from_mapping(TrainParams, {"mixed_precision": 1}, "train")
