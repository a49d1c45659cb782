"""The full-data routes (doodle/routes.py): the data is found on either Kaggle mount and linked file by
file (never train_raw/), params.yaml gets the route's values with its comments kept and passes the
check stage, the [kaggle] comments of params.yaml agree with the routes, and a linked folder (which
DVC would not look inside) is refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from doodle import routes
from doodle.core.params import read_params
from doodle.recipes import flatten
from stages.cli import subprocess_env
from tests.conftest import REPO


def fake_mount(root, new_layout: bool, classes=("cat", "The Eiffel Tower")):
    """A Kaggle input mount holding the competition with its raw files beside the simplified ones."""
    comp = root / ("competitions" if new_layout else "") / routes.COMPETITION
    (comp / "train_simplified").mkdir(parents=True)
    (comp / "train_raw").mkdir()
    sample = REPO.parent / "shared" / "data" / "quickdraw-kaggle"
    for word in classes:
        if (sample / "train_simplified" / f"{word}.csv").is_file():
            shutil.copy(sample / "train_simplified" / f"{word}.csv", comp / "train_simplified" / f"{word}.csv")
        else:
            (comp / "train_simplified" / f"{word}.csv").write_text(
                "countrycode,drawing,key_id,recognized,timestamp,word\n"
                f'US,"[[[0, 10], [0, 10]]]",{abs(hash(word)) % 10**15},True,2017-03-03 17:58:50.5,{word}\n'
            )
        (comp / "train_raw" / f"{word}.csv").write_text("raw, never read\n")
    (comp / "test_simplified.csv").write_text('key_id,countrycode,drawing\n1,US,"[[[0, 5], [0, 5]]]"\n')
    (comp / "test_raw.csv").write_text("raw, never read\n")
    (comp / "sample_submission.csv").write_text("key_id,word\n1,cat cat cat\n")
    return comp


@pytest.mark.parametrize("new_layout", [True, False])
def test_the_data_is_found_on_either_mount_and_linked_file_by_file(tmp_path, new_layout):
    comp = fake_mount(tmp_path / "input", new_layout)
    assert routes.find_competition(tmp_path / "input") == comp
    view = tmp_path / "proj" / "data" / "raw"
    linked = routes.link_view(comp, view)
    assert linked["class_files"] == 2 and linked["left_out"] == ["sample_submission.csv", "test_raw.csv", "train_raw"]
    names = sorted(p.name for p in (view / "train_simplified").iterdir())
    assert names == ["The Eiffel Tower.csv", "cat.csv"]
    for p in [*(view / "train_simplified").iterdir(), view / "test_simplified.csv"]:
        assert p.is_symlink() and p.resolve().parent in (comp, comp / "train_simplified")
    assert not (view / "train_raw").exists() and not (view / "train_simplified").is_symlink()
    routes.link_view(comp, view)  # a view made here is replaced
    (tmp_path / "mine").mkdir()
    with pytest.raises(routes.RouteError, match="was not made by this command"):
        routes.link_view(comp, tmp_path / "mine")


def test_no_mount_is_one_clear_error(tmp_path):
    with pytest.raises(routes.RouteError, match="no competition data under .*Add Input"):
        routes.find_competition(tmp_path)


def test_a_found_folder_anywhere_under_the_mount(tmp_path):
    comp = fake_mount(tmp_path / "input" / "someone", new_layout=False)
    assert routes.find_competition(tmp_path / "input") == comp


def apply_route_in(tmp_path, monkeypatch, route: str):
    """A project under ``tmp_path`` with the repository's params.yaml, as the working directory, and
    ``route`` applied to it from a fake Kaggle mount (no DVC command run). Returns the project."""
    fake_mount(tmp_path / "input", new_layout=True)
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(REPO / "params.yaml", proj / "params.yaml")
    monkeypatch.chdir(proj)
    routes.main([route, "--input-root", str(tmp_path / "input"), "--no-dvc"])
    return proj


def test_applying_a_route_writes_its_params_with_the_comments_kept_and_the_check_stage_passes(tmp_path, monkeypatch):
    proj = apply_route_in(tmp_path, monkeypatch, "kaggle-notebook")
    text = (proj / "params.yaml").read_text()
    assert "# Every knob of the pipeline." in text and "[kaggle]" in text  # comments kept
    params = read_params(proj / "params.yaml")
    for key, value in flatten(routes.get("kaggle-notebook").params()).items():
        got = params
        for part in key.split("."):
            got = got[part]
        assert got == value, key
    r = subprocess.run(
        [sys.executable, "-m", "stages.check"], cwd=proj, env=subprocess_env(), capture_output=True, text=True
    )
    assert r.returncode == 0 and "data.source data/raw (kaggle)" in r.stdout, r.stdout + r.stderr


def test_a_linked_folder_is_refused_by_the_check_stage(tmp_path):
    from doodle.sources.folder import DataParams, SourceError, check_source_for_dvc

    comp = fake_mount(tmp_path / "input", new_layout=False)
    view = tmp_path / "view"
    view.mkdir()
    (view / "train_simplified").symlink_to(comp / "train_simplified")
    shutil.copy(comp / "test_simplified.csv", view / "test_simplified.csv")
    with pytest.raises(SourceError, match="is a link to a folder, and DVC does not look inside"):
        check_source_for_dvc(DataParams(str(view)))
    assert check_source_for_dvc(DataParams(str(comp))) == "kaggle"


def kaggle_comments() -> list[tuple[str, str]]:
    """(dotted key, value) of every ``key: value  # ... [kaggle] VALUE`` line of params.yaml."""
    found, stack = [], []
    for line in (REPO / "params.yaml").read_text().splitlines():
        m = re.match(r"^( *)([A-Za-z_]+):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = [*stack[:depth], m.group(2)]
        k = re.search(r"\[kaggle\] ([^ ,;(]+?)[.:]?(?=[ ,;(]|$)", line)
        if k:
            found.append((".".join(stack), k.group(1)))
    return found


@pytest.mark.parametrize("name", sorted(routes.ROUTES))
def test_the_kaggle_comments_of_params_yaml_agree_with_the_routes(name):
    """A ``[kaggle] VALUE`` comment names the value both Kaggle routes set."""
    comments = kaggle_comments()
    assert len(comments) >= 5
    route = flatten(routes.get(name).params())
    for key, value in comments:
        assert key in route, f"params.yaml says [kaggle] {value} for {key}, which route {name} does not set"
        assert yaml.safe_load(value) == route[key] or str(route[key]) == value, (key, value, route[key])


def test_a_blend_route_writes_its_models_whole_and_each_model_resolves(tmp_path, monkeypatch):
    """kaggle-gpu-blend replaces the models section (the sample's `main` does not join the blend); each
    model resolves to the route's train section, the strokes one through its recipe."""
    proj = apply_route_in(tmp_path, monkeypatch, "kaggle-gpu-blend")
    params = read_params(proj / "params.yaml")
    assert params["models"] == {"ours": {}, "strokes": {"recipe": "ours-strokes", "batch_size": 680}}
    from doodle import lineup

    ours, strokes = (lineup.train_params(params, n) for n in ("ours", "strokes"))
    assert (ours.model, strokes.model) == ("cnn", "stroke_conv1d")
    assert ours.batch_size == strokes.batch_size == 680 and ours.steps_per_epoch == strokes.steps_per_epoch == 800
    assert "# Every knob of the pipeline." in (proj / "params.yaml").read_text()  # comments kept
