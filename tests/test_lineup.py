"""params.yaml's ``models`` (doodle.lineup): each model is the train section with its recipe and
overrides merged in; a shared time budget is split; a bad model is one named line before any work."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from doodle import lineup
from doodle.core.params import ParamError
from doodle.drawing.raster import RenderParams
from doodle.recipes import RECIPES
from doodle.render.params import RenderSection
from doodle.sections import check_all
from doodle.train.params import RASTER_KEYS, trains_on_cache
from stages.cli import subprocess_env
from tests.conftest import REPO, copy_project, kill_when, run_dvc, stages_run, write_params


def params_with(models: dict, **sections) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = models
    for name, values in sections.items():
        params[name] = {**params[name], **values}
    return params


def test_a_model_is_the_train_section_with_its_recipe_then_its_own_overrides():
    params = params_with({"main": {}, "strokes": {"recipe": "ours-strokes", "width": 0.75, "sequence": {"time": True}}})
    assert lineup.names(params) == ["main", "strokes"]
    assert lineup.resolved(params, "main") == params["train"]  # no overrides: the section as it is
    strokes = lineup.train_params(params, "strokes")
    recipe = RECIPES["ours-strokes"].overrides["train"]
    assert strokes.model == recipe["model"] == "stroke_conv1d" and strokes.width == 0.75  # its own beats the recipe
    assert strokes.label_smoothing == recipe["label_smoothing"]  # from the recipe
    assert strokes.epochs == params["train"]["epochs"]  # from the train section
    # nested keys merge key by key: the recipe's position channels stay, time is added
    assert strokes.sequence == {**recipe["sequence"], "time": True}


def test_a_shared_time_budget_is_split_among_the_models_that_set_none():
    models = {"a": {}, "b": {}, "c": {"time_budget_s": 100}}
    params = params_with(models, train={"time_budget_s": 700})
    assert [lineup.budget(params, n) for n in "abc"] == [300, 300, 100]
    assert lineup.budget(params_with({"a": {}}, train={"time_budget_s": 700}), "a") == 700
    assert lineup.budget(params_with(models), "a") is None  # no shared budget
    thirds = params_with({"a": {}, "b": {}, "c": {}}, train={"time_budget_s": 1000})
    assert [lineup.train_params(thirds, n).time_budget_s for n in "abc"] == [333, 333, 333]  # whole seconds
    with pytest.raises(ParamError, match=r"train.time_budget_s: 90 s is shared .* take 100 s"):
        lineup.budget(params_with(models, train={"time_budget_s": 90}), "a")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({}, "param models: name at least one model"),
        ({"Main": {}}, "param models.Main: a model name is lower-case"),
        ({"backup": {}}, "param models.backup: 'backup' is reserved"),
        ({"a-b": {}, "a_b": {}}, "param models: 'a-b' and 'a_b' name the same model twice"),
        ({"main": {"recipe": "resnet"}}, "param models.main.recipe: unknown recipe 'resnet'"),
        ({"main": {"widht": 0.5}}, "unknown param.* models.main.widht"),
        ({"main": {"width": -1}}, "param models.main.width: must be > 0"),
        ({"main": {"render": {"sise": 64}}}, "param models.main.render: a model's own drawing params are size"),
        ({"main": {"render": {"size": 4}}}, r"param models.main.render.size: must be in 8..512"),
        ({"main": {"render": {"size": 16}}}, r"model main: param train.render.size: cnn needs images of at least 19px"),
        ({"s": {"model": "stroke_conv1d", "render": {"size": 64}}}, "param models.s.render: the stroke model"),
        ({"main": [1, 2]}, "param models.main: expected a mapping"),
        ({"main": {"stroke_augment": {"scale": 0.1}}}, "param train.stroke_augment: needs render.train_cache: false"),
    ],
)
def test_a_bad_model_is_one_line_naming_it(models, message):
    with pytest.raises(ParamError, match=message):
        check_all(params_with(models))


def test_a_stroke_model_on_pixel_data_is_refused_by_name():
    params = params_with({"main": {}, "strokes": {"model": "stroke_conv1d"}})
    check_all(params, "kaggle")
    with pytest.raises(ParamError, match="model strokes: train.model stroke_conv1d reads strokes, but data.source"):
        check_all(params, "digits")


def test_an_image_model_draws_as_the_render_section_unless_it_or_its_recipe_says_otherwise():
    ours = RECIPES["ours"].overrides["render"]
    drawn = {k: ours[k] for k in RASTER_KEYS}
    default = RenderSection()  # 32px, 1 channel, the cache trains
    params = params_with({"main": {}, "small": {"render": {"size": 24}}, "ours": {"recipe": "ours"}})
    models = lineup.check_models(params, default)  # ours's stroke augmentation: it draws on the fly
    assert models["main"].render == {} and models["main"].raster(default) == default.raster()
    assert trains_on_cache(default, models["main"].encoder(default))
    assert models["small"].raster(default) == RenderParams(24, default.line_width, 1, default.antialias)
    assert models["ours"].render == drawn and models["ours"].raster(default) == RenderParams(**drawn)
    for name in ("small", "ours"):  # drawn on the fly, validated on the same drawings drawn so
        assert not trains_on_cache(default, models[name].encoder(default))
    # the recipe's drawing is the render section's: the model reads the cache like any other
    as_recipe = RenderSection(**{**RenderSection().__dict__, **ours})
    same = lineup.check_models(params_with({"ours": {"recipe": "ours"}}, render=ours), as_recipe)["ours"]
    assert same.raster(as_recipe) == as_recipe.raster()
    # a stroke model's recipe draws nothing: its render keys are not taken
    strokes = lineup.train_params(params_with({"s": {"recipe": "ours-strokes"}}), "s")
    assert strokes.render == {} and strokes.encoder(default) == strokes.sequence_params


def test_the_check_stage_writes_each_models_resolved_section(tmp_path):
    write_params(tmp_path / "params.yaml", {"models": {"strokes": {"model": "stroke_conv1d"}}})
    r = subprocess.run(
        [sys.executable, "-m", "stages.check"], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "models: main, strokes" in r.stdout
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for name in ("main", "strokes"):
        assert json.loads((tmp_path / "reports/models" / f"{name}.json").read_text()) == lineup.resolved(params, name)


@pytest.mark.slow
def test_each_model_trains_in_its_own_stage_resumes_alone_and_a_change_to_one_retrains_only_it(reproduced, tmp_path):
    """Three models through DVC: train@main (the image cnn), train@strokes (a stroke model) and
    train@small (the cnn drawing its own 24px images on the fly, beside the cache's 32px).
    - `dvc repro` killed (the whole process group, as a lost kernel) while train@strokes is past its first
      epoch: the rerun does not retrain main (its stage finished, cached) and resumes strokes from its backup;
    - predict blends them with fitted weights; evaluate scores the blend and each model alone;
    - `dvc exp run -S` on one model's key reruns that model, predict and evaluate, and leaves the other
      model's file as it was."""
    proj = copy_project(reproduced[0], tmp_path / "repo")  # train@main done: models are added to it
    strokes = {"model": "stroke_conv1d", "width": 0.25, "sequence": {"max_points": 64}, "epochs": 4}
    small = {"render": {"size": 24}}
    write_params(proj / "params.yaml", {"models": {"strokes": strokes, "small": small}})
    backup = proj / "models/backup/strokes"
    kill_when(proj, ["repro"], lambda: backup.is_dir() and any(backup.glob("epoch-*")))
    # main finished (its figures written); strokes did not (a model file may exist: the best so far is kept)
    assert (proj / "metrics/train/main.json").is_file() and not (proj / "metrics/train/strokes.json").exists()
    out = run_dvc(["repro"], proj)
    ran = stages_run(out)
    assert "train@main" not in ran and ran[0] == "train@strokes" and "predict" in ran, ran
    assert re.search(r"resuming from backup after epoch \d", out), out
    assert not backup.exists()

    blend = json.loads((proj / "reports/blend.json").read_text())
    assert [m["name"] for m in blend["models"]] == ["main", "strokes", "small"]
    assert sum(m["weight"] for m in blend["models"]) == pytest.approx(1, abs=1e-3)
    assert all(0 <= m["val_map_at_3"] <= 1 for m in blend["models"]) and "val_map_at_3_blend" in blend
    assert json.loads((proj / "models/strokes/model.json").read_text())["input"]["kind"] == "sequence"
    assert json.loads((proj / "models/small/model.json").read_text())["input_shape"] == [24, 24, 1]
    for name in ("main", "strokes", "small"):
        assert set(json.loads((proj / f"metrics/train/{name}.json").read_text())) >= {"val_map_at_3"}
        assert (proj / f"reports/train/{name}_curves.png").stat().st_size > 1000
    evaluated = json.loads((proj / "metrics/eval.json").read_text())
    assert set(evaluated["models"]) == {"main", "strokes", "small"}
    assert json.loads((proj / "reports/test.json").read_text())["models"] == 3
    shown = run_dvc(["metrics", "show"], proj)
    assert "models.strokes" in shown and "metrics/train/strokes.json" in shown

    main_model = (proj / "models/main/model.keras").read_bytes()
    again = stages_run(run_dvc(["exp", "run", "-S", "models.strokes.width=0.5"], proj))
    assert again == ["check", "train@strokes", "predict", "evaluate"]
    assert (proj / "models/main/model.keras").read_bytes() == main_model
    assert json.loads((proj / "models/strokes/model.json").read_text())["width"] == 0.5


def test_the_model_a_command_works_on_is_the_named_one_or_the_only_one():
    one = params_with({"main": {}})
    assert lineup.chosen(one, None) == "main" and lineup.chosen(one, "main") == "main"
    two = params_with({"main": {}, "strokes": {"model": "stroke_conv1d"}})
    assert lineup.chosen(two, "strokes") == "strokes"
    with pytest.raises(ParamError, match=r"names 2 models \(main, strokes\): pick one with --model"):
        lineup.chosen(two, None)
    with pytest.raises(ParamError, match="unknown model 'other': params.yaml's models names main, strokes"):
        lineup.chosen(two, "other")
