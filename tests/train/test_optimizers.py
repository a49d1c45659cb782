"""Every optimizer and every learning-rate schedule trains, and a run stopped after its first epoch
resumes where it stopped (the rate schedule and the optimizer's state come back); a backup left by a
run with other params is discarded, never resumed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import work_on_copy

SHORT = {"epochs": 3, "steps_per_epoch": 2, "val_rows": 32}
# each optimizer once and each schedule once
CASES = [("adam", "plateau"), ("adamw", "cosine"), ("sgd", "onecycle"), ("rmsprop", "constant")]


def stop_after_first_epoch(monkeypatch) -> None:
    """Stop the stage as a kill would, once epoch 1 is saved and printed (its line comes last)."""
    from doodle.train import callbacks

    printed = callbacks.EpochLog.on_epoch_end

    def then_stop(self, epoch, logs=None):
        printed(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", then_stop)


def history() -> dict:
    return json.loads(Path("models/main/model.json").read_text())["history"]


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "schedule"), CASES)
def test_each_optimizer_and_schedule_trains_and_resumes(rendered, tmp_path, monkeypatch, capsys, optimizer, schedule):
    from stages import train

    params = {"train": {**SHORT, "optimizer": optimizer, "schedule": schedule}}
    work_on_copy(rendered, tmp_path / "whole", monkeypatch, params)
    train.main(["--quiet"])
    whole = history()

    work_on_copy(rendered, tmp_path / "stopped", monkeypatch, params)
    with monkeypatch.context() as m:
        stop_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(["--quiet"])
    assert not Path("models/main/model.json").exists() and Path("models/backup").is_dir()
    capsys.readouterr()
    train.main(["--quiet"])
    out = capsys.readouterr().out
    assert re.search(r"parameters; resuming from backup after epoch 1$", out, re.M), out
    assert re.findall(r"^epoch (\d)/3 done", out, re.M) == ["2", "3"]  # epoch 1 was not trained again
    resumed = history()
    assert len(resumed["loss"]) == len(whole["loss"]) == 3
    # The schedule continues from where it stopped: the same rate at every epoch as the whole run.
    np.testing.assert_allclose(resumed["learning_rate"], whole["learning_rate"], rtol=1e-6)
    if schedule in ("cosine", "onecycle"):
        assert len(set(np.round(whole["learning_rate"], 12))) == 3, whole["learning_rate"]  # it moves each epoch
    assert all(np.isfinite(resumed["loss"]))


@pytest.mark.slow
def test_a_backup_from_other_params_is_discarded(rendered, tmp_path, monkeypatch, capsys, caplog):
    from stages import train

    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": SHORT})
    with monkeypatch.context() as m:
        stop_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(["--quiet"])
    assert any(Path("models/backup").iterdir())
    work_on_copy(rendered, tmp_path / "edited", monkeypatch, {"train": {**SHORT, "learning_rate": 0.001}})
    shutil.copytree(tmp_path / "p" / "models" / "backup", Path("models/backup"))  # the other run's state
    capsys.readouterr()
    with caplog.at_level("INFO"):
        train.main(["--quiet"])
    out = capsys.readouterr().out
    assert "resuming" not in out
    assert re.findall(r"^epoch (\d)/3 done", out, re.M) == ["1", "2", "3"]  # trained from the start
    assert "discarding backup from a different run" in caplog.text
    assert not Path("models/backup").exists()
