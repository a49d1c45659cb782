"""The stages' command lines: ``--help`` prints ``usage: python -m stages.X`` and the whole module
docstring, without importing TensorFlow or Keras (it is instant); ``score`` imports neither at
all, and names two files given the wrong way round."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from doodle.predict.submission import SubmissionError, score_submission
from stages.cli import subprocess_env
from tests.conftest import REPO

STAGES = sorted(
    p.stem for p in (REPO / "stages").glob("*.py") if not p.stem.startswith("_") and p.stem != "cli"
)  # cli: their shared helpers
FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")

HELP_PROBE = """
import contextlib, io, json, runpy, sys
out = {}
for stage in sys.argv[1:]:
    sys.argv = [f"stages/{stage}.py", "--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module(f"stages.{stage}", run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    out[stage] = {"code": code, "help": text.getvalue()}
out["frameworks"] = sorted(m for m in sys.modules if m.split(".")[0] in FRAMEWORKS)
print(json.dumps(out))
""".replace("FRAMEWORKS", repr(FRAMEWORKS))


@pytest.fixture(scope="module")
def helps():
    """Every stage's --help, run in one fresh process, and the frameworks that process imported."""
    r = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *STAGES],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_stage_is_probed():
    assert {"sample", "shard", "render", "train", "predict", "baseline", "evaluate", "score"} <= set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_help_names_the_command_and_prints_the_whole_docstring(helps, stage):
    got = helps[stage]
    assert got["code"] == 0
    assert got["help"].startswith(f"usage: python -m stages.{stage} ")
    doc = ast.get_docstring(ast.parse((REPO / "stages" / f"{stage}.py").read_text()))
    for line in doc.strip().splitlines():  # every line, the last paragraph's included
        assert line.strip() in got["help"], line


def test_help_imports_no_framework(helps):
    assert helps["frameworks"] == []


def test_scoring_imports_no_framework(tmp_path):
    (tmp_path / "s.csv").write_text("key_id,word\n1,cat dog horse\n")
    (tmp_path / "l.csv").write_text("key_id,word\n1,dog\n")
    probe = (
        "import sys; from doodle.predict.submission import score_submission; "
        f"print(score_submission({str(tmp_path / 's.csv')!r}, {str(tmp_path / 'l.csv')!r})); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["(0.5, 1)", "[]"]


def test_swapped_score_files_are_named(tmp_path):
    sub, labels = tmp_path / "submission.csv", tmp_path / "test_labels.csv"
    sub.write_text("key_id,word\n1,cat dog The_Eiffel_Tower\n2,dog cat horse\n3,horse dog cat\n")
    labels.write_text("key_id,word\n1,The Eiffel Tower\n2,dog\n3,cat\n")
    assert score_submission(sub, labels) == (pytest.approx((1 / 3 + 1 + 1 / 3) / 3), 3)
    swapped = r"look swapped: \S*submission\.csv has three labels a row \(a submission\) and \S*test_labels\.csv one"
    with pytest.raises(SubmissionError, match=swapped):
        score_submission(labels, sub)
    one_guess = tmp_path / "top1.csv"  # a submission of one guess a row is legal, and scored
    one_guess.write_text("key_id,word\n1,The_Eiffel_Tower\n2,cat\n3,cat\n")
    assert score_submission(one_guess, labels) == (pytest.approx(2 / 3), 3)


def test_score_header_is_checked(tmp_path):
    (tmp_path / "s.csv").write_text("id,label\n1,cat dog horse\n")
    (tmp_path / "l.csv").write_text("key_id,word\n1,dog\n")
    with pytest.raises(SubmissionError, match=r"s\.csv: header is \['id', 'label'\]"):
        score_submission(tmp_path / "s.csv", tmp_path / "l.csv")
    (tmp_path / "s.csv").write_text("key_id,word\n1,cat dog horse,extra\n")
    with pytest.raises(SubmissionError, match=r"s\.csv: 1 row\(s\) not of the form key_id,word"):
        score_submission(tmp_path / "s.csv", tmp_path / "l.csv")
    with pytest.raises(FileNotFoundError, match="submission file not found"):
        score_submission(tmp_path / "none.csv", tmp_path / "l.csv")
