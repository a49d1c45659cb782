"""The training recipes (doodle/recipes.py) are valid params, their `dvc exp run` line applies exactly
their overrides, and train.time_budget_s stops before an epoch that would overrun the budget."""

from __future__ import annotations

import shlex
import shutil

import pytest
import yaml

from doodle import recipes
from doodle.core.params import ParamError
from doodle.sections import load_all
from tests.conftest import REPO


def base_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_there_are_references_and_ours():
    assert {"baseline-mobilenet", "seed-cnn", "ours"} <= set(recipes.RECIPES)
    assert not recipes.RECIPES["ours"].reference
    assert recipes.RECIPES["baseline-mobilenet"].reference and recipes.RECIPES["seed-cnn"].reference


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_recipe_is_valid_params(name):
    recipe = recipes.RECIPES[name]
    assert recipe.description and "\n" not in recipe.description
    assert recipe.overrides and not recipes.run_keys_set(recipe), "a recipe sets the method, not the data or run length"
    params = recipes.apply(recipe, base_params())
    loaded = load_all(params)  # every section through its dataclass (doodle.core.params.from_mapping)
    for key, value in recipe.flat().items():  # and every override arrived where it was meant to
        section, *path = key.split(".")
        got = loaded[section]
        for part in path:
            got = got[part] if isinstance(got, dict) else getattr(got, part)
        assert got == value, key


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"train": {"modle": "cnn"}}, "train.modle"),  # unknown key
        ({"train": {"model": "resnet"}}, "train.model"),  # bad value
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate"),  # wrong type
        ({"train": {"stroke_augment": {"rotate": 10.0}}}, "train.stroke_augment.rotate"),  # unknown nested key
        ({"train": {"time_budget_s": 0}}, "train.time_budget_s"),
        ({"render": {"size": "64"}}, "render.size"),
        ({"trian": {"model": "cnn"}}, "trian"),  # unknown section
    ],
)
def test_bad_overrides_fail(bad, match):
    recipe = recipes.Recipe("bad", "a broken recipe", bad)
    with pytest.raises(ParamError, match=match):
        load_all(recipes.apply(recipe, base_params()))


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_dvc_exp_run_line_round_trips(name, tmp_path):
    """The printed line, parsed as `dvc exp run` parses its -S values (Hydra's grammar, DVC's own
    code), turns params.yaml into params.yaml with exactly the recipe's overrides."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    recipe = recipes.RECIPES[name]
    line = recipe.dvc_command()
    words = shlex.split(line)
    assert words[:3] == ["dvc", "exp", "run"] and words[3::2] == ["-S"] * len(recipe.flat())
    by_file = to_path_overrides(words[4::2])
    assert list(by_file) == ["params.yaml"]
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", by_file["params.yaml"])
    got = yaml.safe_load((tmp_path / "params.yaml").read_text())
    want = recipes.apply(recipe, base_params())
    assert got == want
    for key, value in recipe.flat().items():  # types too: 1.0 stays a float, false a bool
        section, *path = key.split(".")
        node = got[section]
        for part in path:
            node = node[part]
        assert type(node) is type(value), key


def test_print_params_prints_the_line(capsys):
    from benchmarks import quality

    quality.main(["--print-params", "ours"])
    assert capsys.readouterr().out.strip() == recipes.RECIPES["ours"].dvc_command()


def test_benchmark_settings_leave_the_recipes_alone():
    """The benchmark's run settings never override what a recipe sets, and give valid params."""
    from benchmarks import quality

    settings = quality.run_settings(REPO / "data" / "sample", 600, 20, 6)
    for recipe in recipes.RECIPES.values():
        params = quality.recipe_params(recipe, base_params(), settings)
        assert params["train"]["time_budget_s"] == 600 and params["train"]["epochs"] >= 10_000
        assert recipes.flatten(params).items() >= recipe.flat().items()


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeModel:
    stop_training = False


def budget_run(budget, epoch_seconds):
    """Feed TimeBudget epochs of the given lengths (fake time); the epochs it lets run to their end."""
    from doodle.train.callbacks import TimeBudget

    clock, said = FakeClock(), []
    cb = TimeBudget(budget, clock=clock, printer=lambda *a, **k: said.append(a[0]))
    cb.set_model(FakeModel())
    cb.on_train_begin()
    done = 0
    for epoch, seconds in enumerate(epoch_seconds):
        cb.on_epoch_begin(epoch)
        clock.now += seconds
        cb.on_epoch_end(epoch, {})
        done += 1
        if cb.model.stop_training:
            break
    return done, cb, said


def test_time_budget_stops_when_the_next_epoch_would_overrun():
    # 10 s epochs, 45 s budget: after 4 epochs (40 s) a fifth would end at 50 s
    done, cb, said = budget_run(45, [10] * 20)
    assert done == 4 and cb.stopped_epoch == 3 and "stopping after epoch 4" in said[-1]
    # exactly fitting is allowed: 5 epochs of 10 s in 50 s
    assert budget_run(50, [10] * 20)[0] == 5


def test_time_budget_estimates_from_the_longest_epoch_after_the_first():
    # the first epoch (tracing) is long; after it, the longest later epoch is the estimate
    done, cb, _ = budget_run(100, [30, 10, 20, 10, 10, 10])
    # ends at 30, 40, 60 (next ~20 -> 80 ok), 70 (-> 90 ok), 80 (-> 100 ok), 90 (-> 110 > 100): stop after 6
    assert done == 6 and cb.next_epoch_s() == 20
    # with one epoch only, the first is the estimate: 30 + 30 > 50
    assert budget_run(50, [30, 10])[0] == 1
    # a slower epoch raises the estimate at once
    assert budget_run(100, [10, 10, 40, 10, 10])[0] == 4  # at 60: 60 + 40 = 100 fits; at 70: 70 + 40 > 100


def test_time_budget_never_runs_past_the_budget():
    """No overrun while no epoch is longer than the estimate (the first epoch, tracing included, is the
    longest; later ones never exceed the longest before them), and no stop while the next one fits."""
    import random

    rng = random.Random(0)
    for _ in range(300):
        first = rng.uniform(10, 30)
        second = rng.uniform(5, 10)
        seconds = [first, second] + [rng.uniform(1, second) for _ in range(200)]
        budget = rng.uniform(first, 600)
        done, cb, _ = budget_run(budget, seconds)
        assert done < len(seconds) and sum(seconds[:done]) <= budget
        assert sum(seconds[:done]) + cb.next_epoch_s() > budget  # it stopped only when the next might not fit


def test_time_budget_warns_when_one_epoch_is_longer_than_the_budget():
    done, _, said = budget_run(30, [40, 40])
    assert done == 1 and any("past the 30s budget" in s for s in said)


def test_time_budget_cuts_an_epoch_longer_than_the_budget_at_the_first_step_past_it():
    """Steps of 3 s, 10 steps an epoch, a 10 s budget: the first epoch stops after its 4th step
    (12 s), is ended as usual (validated, counted), and the run is finished."""
    from doodle.train.callbacks import TimeBudget

    clock, said = FakeClock(), []
    cb = TimeBudget(10, clock=clock, printer=lambda *a, **k: said.append(a[0]))
    cb.set_model(FakeModel())
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    steps = 0
    for step in range(10):
        clock.now += 3
        steps += 1
        cb.on_train_batch_end(step)
        if cb.model.stop_training:
            break
    cb.on_epoch_end(0, {})
    assert steps == 4 and cb.cut_at_step == 3 and cb.stopped_epoch == 0
    assert said == [
        "time budget: the 10s budget ran out at step 4 of epoch 1: the epoch ends here "
        "(validated as usual) and training stops"
    ]
    # an epoch that fits is never cut
    assert budget_run(45, [10] * 20)[1].cut_at_step is None
    # the speed of the cut epoch counts the 4 steps it ran, not the 10 it was planned for
    from doodle.train.callbacks import EpochLog

    log = EpochLog(steps=10, batch=5, epochs=1, budget=cb)
    log.on_epoch_begin(0)
    seconds, speed = log.elapsed()
    assert seconds * speed == pytest.approx(4 * 5)


def test_time_budget_param():
    from doodle.core.params import from_mapping
    from doodle.train.params import TrainParams

    assert TrainParams().time_budget_s is None
    assert from_mapping(TrainParams, {"time_budget_s": 600}, "train").time_budget_s == 600
    with pytest.raises(ParamError, match="time_budget_s"):
        from_mapping(TrainParams, {"time_budget_s": -5}, "train")
    with pytest.raises(ParamError, match="time_budget_s"):
        from_mapping(TrainParams, {"time_budget_s": "10m"}, "train")
