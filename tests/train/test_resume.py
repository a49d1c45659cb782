"""Resuming a killed training: the rerun ends exactly where an uninterrupted run with the same seed ends."""

import io
import json
import shutil
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from tests.conftest import LEARNED_FLOOR, subprocess_env, write_params

# A run that learns, peaks before its last epoch, halves the learning rate after 2 epochs without a new
# best and stops after 3. Measured here: best at epoch 7, the rate halved for epoch 10, stopped after
# epoch 10 of 12. It is killed after epoch 8, when the best is behind it and both counters are at 1, so
# the rerun only matches if the best score, the counters, the rate and the random streams come back.
EXACT = {
    "train": {
        "epochs": 12,
        "steps_per_epoch": 10,
        "val_rows": 32,  # one batch of TINY's 32
        "learning_rate": 0.005,
        "early_stopping_patience": 3,
    }
}
KILL_AFTER = 8
# Both runs, the uninterrupted one and the killed-and-resumed one, run the train stage as
# `python -m stages.train --quiet` does, with TensorFlow's deterministic ops: bit-identical weights
# must follow from the same inputs, not from one CPU's kernels happening to sum in the same order.
# The stage is imported first so that TensorFlow's import goes through its quiet start-up.
DETERMINISTIC_TRAIN = """
from stages import cli, train
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
cli.run(lambda: train.main(["--quiet"]))
"""
TRAIN = [sys.executable, "-u", "-c", DETERMINISTIC_TRAIN]


def _project(rendered, path, overrides):
    shutil.copytree(rendered, path)
    write_params(path / "params.yaml", overrides)
    return path


def _train(proj):
    run = subprocess.run(TRAIN, cwd=proj, env=subprocess_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _train_killed_after(proj, line_start):
    """Run the stage and SIGKILL it (no clean-up code runs) when a line starting so is printed."""
    proc = subprocess.Popen(TRAIN, cwd=proj, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    for line in proc.stdout:
        seen.append(line.decode())
        if seen[-1].startswith(line_start):
            proc.kill()
            break
    proc.wait()
    proc.stdout.close()
    assert seen and seen[-1].startswith(line_start), "".join(seen)


def _weights(model_file):
    """Every array in a .keras file (model and optimizer variables), read without loading Keras."""
    with zipfile.ZipFile(model_file) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as h5:
        arrays = {}
        h5.visititems(lambda name, obj: arrays.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def _live_rows(proj):
    """{metric tsv: [(step, value), ...]} of a DVCLive directory."""
    rows = {}
    for tsv in sorted((proj / "dvclive/main/plots/metrics").rglob("*.tsv")):
        lines = tsv.read_text().split()[2:]  # header: step, name
        rows[str(tsv.relative_to(proj))] = [(int(s), float(v)) for s, v in zip(lines[::2], lines[1::2])]
    return rows


@pytest.mark.slow
def test_killed_training_ends_as_an_uninterrupted_one(rendered, tmp_path):
    whole = _project(rendered, tmp_path / "whole", EXACT)
    killed = _project(rendered, tmp_path / "killed", EXACT)
    epochs = EXACT["train"]["epochs"]
    uninterrupted = subprocess.Popen(
        TRAIN, cwd=whole, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _train_killed_after(killed, f"epoch {KILL_AFTER}/{epochs} done")  # meanwhile
    out = uninterrupted.communicate()[0]
    assert uninterrupted.returncode == 0, out
    meta = json.loads((whole / "models/main/model.json").read_text())
    history, runs = meta["history"], meta["metrics"]["epochs_run"]
    best = int(np.argmax(history["val_map_at_3"]))  # the first best, as the checkpoint keeps it
    assert history["val_map_at_3"][best] >= LEARNED_FLOOR, history["val_map_at_3"]  # it learns (0.97 measured)
    assert best + 1 < KILL_AFTER < runs < epochs, f"EXACT no longer peaks, then stops, around the kill: {history}"

    # The line is printed once its epoch is saved (the kill may come a little later on a busy machine).
    assert not (killed / "models/main/model.json").exists()
    backup = killed / "models/backup/main"
    saved = max(int(p.name.removeprefix("epoch-")) for p in backup.glob("epoch-*"))
    assert KILL_AFTER <= saved < runs
    # What a kill elsewhere in the next epoch would leave too: its DVCLive row logged but its state not
    # saved, its state half written, an older state whose clean-up was cut off.
    for tsv in (killed / "dvclive/main/plots/metrics").rglob("*.tsv"):
        tsv.write_text(tsv.read_text() + f"{saved}\t-1.0\n")
    (backup / f".epoch-{saved + 1:04d}.tmp").mkdir(exist_ok=True)
    (backup / f"epoch-{saved - 1:04d}").mkdir(exist_ok=True)

    out = _train(killed)
    assert "resuming" in out, out
    rerun = [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")]
    assert rerun == [f"{e}/{epochs}" for e in range(saved + 1, runs + 1)], out  # from the next epoch on

    # The same model (weights and optimizer state, bit for bit), history, learning rates, stopping epoch.
    resumed = json.loads((killed / "models/main/model.json").read_text())
    assert resumed["history"] == meta["history"]
    assert resumed["metrics"] == meta["metrics"]  # includes epochs_run and the best model's val scores
    a, b = _weights(whole / "models/main/model.keras"), _weights(killed / "models/main/model.keras")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not (killed / "models/backup").exists()

    # Continuous DVCLive curves: each step 0..runs-1 exactly once, the same values (speed aside).
    whole_rows, killed_rows = _live_rows(whole), _live_rows(killed)
    assert whole_rows.keys() == killed_rows.keys()
    for name, rows in killed_rows.items():
        assert [step for step, _ in rows] == list(range(runs)), name
        assert name.endswith("images_per_s.tsv") or rows == whole_rows[name], name
    summary = [json.loads((p / "dvclive/main/metrics.json").read_text()) for p in (whole, killed)]
    for s in summary:
        s.pop("images_per_s")
    assert summary[0] == summary[1] and summary[1]["step"] == runs - 1
