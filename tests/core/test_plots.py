"""The plots a Kaggler reads: training curves with train and validation of a metric on one chart
(reports/train/main_curves.png and the `dvc plots show` definitions of dvc.yaml), the most confused
pairs as labelled bars, and confidence histograms in which the few wrong predictions are visible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.colors import same_color

from doodle.core.plots import group_histograms_figure, learning_curves, learning_curves_figure
from tests.conftest import REPO, copy_project, run_dvc


def lines_of(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def test_learning_curves_draw_train_solid_and_validation_dashed_on_the_same_axes():
    histories = {
        "fold0-seed0": {
            "loss": [1.0, 0.5, 0.3],
            "val_loss": [0.9, 0.6, 0.5],
            "map_at_3": [0.5, 0.7, 0.8],
            "val_map_at_3": [0.6, 0.7, 0.75],
        },
        "fold1-seed0": {"loss": [1.1, 0.4], "val_loss": [1.0, 0.7], "map_at_3": [0.4, 0.8]},  # no val MAP@3
    }
    fig = learning_curves_figure(histories, ("map_at_3", "loss"), title="t")
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in panels] == ["MAP@3: train vs validation", "loss: train vs validation"]
    for ax, key in zip(panels, ("map_at_3", "loss")):
        lines = lines_of(ax)
        for name, history in histories.items():
            for split, hkey, style in (("train", key, "-"), ("validation", f"val_{key}", "--")):
                label = f"{name} {split}"
                if hkey not in history:
                    assert label not in lines  # a run without the key is left out of that panel
                    continue
                line = lines[label]
                assert line.get_linestyle() == style
                assert list(line.get_ydata()) == history[hkey]
                assert list(line.get_xdata()) == list(range(1, len(history[hkey]) + 1))  # epochs from 1
            # a member's train and validation lines share its colour; members differ
            if f"val_{key}" in history:
                assert same_color(lines[f"{name} train"].get_color(), lines[f"{name} validation"].get_color())
        a, b = histories
        assert not same_color(lines[f"{a} train"].get_color(), lines[f"{b} train"].get_color())
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend[:2] == ["train (mean over the epoch's batches)", "validation (after the epoch)"]
    assert legend[2:] == list(histories)  # the members' colours, as there are several


def test_a_single_model_has_no_member_legend():
    fig = learning_curves_figure({"model": {"loss": [1.0, 0.5], "val_loss": [0.8, 0.7]}}, ("loss",))
    assert set(lines_of(fig.axes[0])) == {"model train", "model validation"}
    assert len(fig.axes[0].get_legend().get_texts()) == 2


def test_group_histograms_normalise_each_group_so_a_small_group_is_visible():
    bins = np.linspace(0, 1, 26)
    correct = np.zeros(25, np.int64)
    correct[-1], correct[-2] = 2900, 66
    wrong = np.zeros(25, np.int64)
    wrong[[12, 15, 20]] = [30, 25, 20]
    fig = group_histograms_figure({"correct": correct, "wrong": wrong}, bins, "top-1 probability", "title (%)")
    assert len(fig.axes) == 2  # one panel a group, each with its own y scale
    for ax, counts in zip(fig.axes, (correct, wrong)):
        heights = np.array([p.get_height() for p in ax.patches])
        assert heights.sum() == pytest.approx(100)  # % of its own group
        assert np.allclose(heights, 100 * counts / counts.sum())
    assert max(p.get_height() for p in fig.axes[1].patches) == pytest.approx(40)  # not 1% of the correct ones
    assert [ax.get_title() for ax in fig.axes] == ["correct: 2,966", "wrong: 75"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["% of correct", "% of wrong"]


def test_group_histograms_use_the_given_totals_and_survive_an_empty_group():
    bins = np.linspace(0, 1, 5)
    fig = group_histograms_figure(
        {"correct": np.array([0, 1, 1, 2]), "wrong": np.zeros(4, np.int64)},
        bins,
        "p",
        "t",
        totals={"correct": 8, "wrong": 0},  # rows outside the bins count in the total
    )
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0, 12.5, 12.5, 25])
    assert not fig.axes[1].patches and fig.axes[1].texts[0].get_text() == "no wrong"


# -- a real (tiny) training and evaluation, and what dvc.yaml draws from them ------------------------


@pytest.fixture(scope="module")
def trained(reproduced, tmp_path_factory):
    """The tiny project as `dvc repro` left it (trained 2 epochs, predicted, evaluated), copied once
    for this module, so `dvc plots show` can draw it."""
    return copy_project(reproduced[0], tmp_path_factory.mktemp("plots") / "p")


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        header, *rows = list(csv.reader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
    return header, rows


@pytest.mark.slow  # a training and an evaluation (the module's fixture)
def test_train_curves_draw_metrics_the_history_holds_for_train_and_validation(trained, tmp_path):
    """The stage's chart is the model's recorded history drawn, MAP@3 and loss, train and validation."""
    history = json.loads((trained / "models/main/model.json").read_text())["history"]
    for key in ("map_at_3", "loss"):  # each panel has both lines, one point an epoch
        assert len(history[key]) == len(history[f"val_{key}"]) == 2
    again = learning_curves(
        {"model": history}, tmp_path / "again.png", ("map_at_3", "loss"), "training curves of the model"
    )
    assert (trained / "reports/train/main_curves.png").read_bytes() == again.read_bytes()


@pytest.mark.slow  # a training and an evaluation (the module's fixture)
def test_each_model_stage_declares_its_curves_and_dvclive_files_the_training_writes(trained):
    d = trained
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["do"]
    plots = [next(iter(p)) for p in spec["plots"]]
    assert plots == ["reports/train/${key}_curves.png"]
    assert (d / plots[0].replace("${key}", "main")).stat().st_size > 1000
    live = d / "dvclive/main/plots/metrics"
    for name in ("loss", "map_at_3", "accuracy", "top3"):  # DVCLive: train and validation, a row an epoch
        for split in ("train", "val"):
            header, rows = read_table(live / split / f"{name}.tsv")
            assert {"step", name} <= set(header) and len(rows) == 2


@pytest.mark.slow  # a training and an evaluation (the module's fixture)
def test_confused_pairs_have_the_label_column_the_template_draws(trained):
    d = trained
    spec = next(
        p["reports/confused_pairs.csv"]
        for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["plots"]
        if "reports/confused_pairs.csv" in p
    )
    header, rows = read_table(d / "reports/confused_pairs.csv")
    assert spec["template"].startswith("bar_horizontal") and {spec["x"], spec["y"]} <= set(header)
    assert rows, "a 2-epoch model confuses some pairs"
    for row in rows:
        r = dict(zip(header, row))
        assert r[spec["y"]] == f"{r['actual']} -> {r['predicted']}" and int(r[spec["x"]]) > 0


@pytest.mark.slow  # a training and an evaluation (the module's fixture)
def test_dvc_plots_show_resolves_every_plot_with_both_series(trained):
    d = trained
    shown = json.loads(run_dvc(["plots", "show", "--json"], d))
    assert not shown.get("errors"), shown.get("errors")
    data = shown["data"]
    assert "reports/train/main_curves.png" in data  # each model's curves, train and validation on one chart
    (pairs,) = data["reports/confused_pairs.csv"]
    assert pairs["content"]["encoding"]["y"]["field"] == "pair"
