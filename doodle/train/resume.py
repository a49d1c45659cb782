"""Exact resumption of a killed training: a rerun ends with the model an uninterrupted run keeps.

Keras' ``BackupAndRestore`` brings back the weights, the optimizer and the epoch, but not what the
other callbacks have learnt about the run: the best validation score so far (which epoch's model is
kept), EarlyStopping's patience count and ReduceLROnPlateau's wait, cooldown and best. A resumed run
would compare against a fresh "best" and overwrite a better checkpoint with a worse one, stop later
than it should and halve the learning rate epochs late. Dropout and augmentation would also draw
new random numbers, because their seed generators are variables that a weights backup skips.

:class:`TrainingState` saves all of it after every epoch, as one directory that is written aside and
then renamed into place. A kill at any instant therefore leaves either the previous epoch's state or
the new one, never a mix, and the rerun continues from it exactly. Each state directory also holds
the best model so far, so ``models/<name>/model.keras`` is always a copy of the best model of a saved state.

DVCLive rows are logged before the state is saved (a row is never missing); rows of an epoch whose
state was not saved are dropped by :func:`reopen_live` when the run resumes, and the epoch runs again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)

# What ModelCheckpoint / EarlyStopping / ReduceLROnPlateau decide with: saved for each tracked callback.
COUNTERS = ("best", "best_epoch", "wait", "stopped_epoch", "cooldown_counter")


class TrainingState(keras.callbacks.Callback):
    """Saves everything a killed ``model.fit`` needs after each epoch; restores it when training starts.

    The state of epoch ``n`` (1-based) is ``directory/epoch-000n/``:
    - ``variables.npz``: every model and optimizer variable, by position. This includes the seed
      generators of dropout and augmentation, the optimizer's iteration count (which drives the
      cosine and one-cycle schedules) and its learning rate (which ReduceLROnPlateau changes).
    - ``best.keras``: the best model so far by ``monitor`` (a hard link when this epoch did not improve).
    - ``state.json``: the run's fingerprint, epochs done, whether training stopped, the best score and
      epoch, the per-epoch history, and the counters of the ``track``ed callbacks.

    Only the newest state is kept. A state from another run (its ``fingerprint`` of params and data
    differs) is discarded, so an edited params.yaml never resumes a stale run.

    Put it after every callback whose decisions it should save (they run in list order), and pass
    those in ``track``. Restoring happens in ``on_train_begin``, after theirs has reset them. Pass
    ``initial_epoch=epochs_done`` to ``fit`` (or ``epochs`` when ``stopped``): Keras has no public way
    for a callback to move the start epoch.
    """

    def __init__(self, directory, fingerprint: str, best_model, monitor: str = "val_map_at_3", track=()):
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.best_model = Path(best_model)
        self.monitor = monitor  # higher is better
        self.track = list(track)
        self.epochs_done = 0
        self.stopped = False
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.history: dict[str, list[float]] = {}
        self._saved = self._load()

    # -- loading and restoring ---------------------------------------------------------------------

    def _states(self) -> list[Path]:
        """Complete state directories, oldest first (a directory is complete once renamed)."""
        return sorted(self.directory.glob("epoch-[0-9]*"), key=lambda p: int(p.name.removeprefix("epoch-")))

    def _load(self) -> dict | None:
        """Read the newest saved state of this run; discard the backup if it is from another run."""
        states = self._states()
        if not states:
            shutil.rmtree(self.directory, ignore_errors=True)  # leftovers of a kill during the first save
            return None
        saved = json.loads((states[-1] / "state.json").read_text())
        if saved["fingerprint"] != self.fingerprint:
            log.info("discarding backup from a different run in %s", self.directory)
            shutil.rmtree(self.directory)
            return None
        self.epochs_done, self.stopped = saved["epochs_done"], saved["stopped"]
        self.best, self.best_epoch, self.history = saved["best"], saved["best_epoch"], saved["history"]
        return {**saved, "path": states[-1]}

    def _variables(self):
        return [*self.model.variables, *self.model.optimizer.variables]

    def on_train_begin(self, logs=None):
        if self._saved is None:
            return
        optimizer = self.model.optimizer
        if not optimizer.built:  # its slot variables are otherwise only made by the first training step
            optimizer.build(self.model.trainable_variables)
        with np.load(self._saved["path"] / "variables.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        variables = self._variables()
        if len(values) != len(variables):
            raise ValueError(f"{self.directory} does not match this model; delete it to start over")
        for variable, value in zip(variables, values):
            variable.assign(value)
        for callback in self.track:
            for name, value in self._saved["callbacks"][type(callback).__name__].items():
                setattr(callback, name, value)

    # -- saving ------------------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        current = logs.get(self.monitor)
        improved = current is not None and (self.best is None or current > self.best)
        if improved:
            self.best, self.best_epoch = float(current), epoch
        self.epochs_done = epoch + 1
        self.stopped = bool(self.model.stop_training)
        self._save(improved)
        if improved:
            self._publish_best()

    def on_train_end(self, logs=None):
        self._publish_best()  # also when a kill fell between saving a new best and publishing it

    def _save(self, improved: bool) -> None:
        """Write the state aside, then rename it into place: the rename is what makes it count."""
        name = f"epoch-{self.epochs_done:04d}"
        tmp = self.directory / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.savez(tmp / "variables.npz", *[keras.ops.convert_to_numpy(v) for v in self._variables()])
        previous = self._states()
        if improved or not previous:
            self.model.save(tmp / "best.keras")
        else:
            _link_or_copy(previous[-1] / "best.keras", tmp / "best.keras")
        counters = {type(c).__name__: {k: _plain(getattr(c, k)) for k in COUNTERS if hasattr(c, k)} for c in self.track}
        state = {
            "fingerprint": self.fingerprint,
            "epochs_done": self.epochs_done,
            "stopped": self.stopped,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "callbacks": counters,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        final = self.directory / name
        os.rename(tmp, final)
        for old in self._states():  # older states and stray temporaries: the new state is complete
            if old != final:
                shutil.rmtree(old)
        for stray in self.directory.glob(".epoch-*.tmp"):
            shutil.rmtree(stray)

    def _publish_best(self) -> None:
        """Copy the saved best model to ``best_model``, atomically (readers never see half a file)."""
        states = self._states()
        if not states:
            return
        tmp = self.best_model.with_name(f".{self.best_model.name}.tmp")
        self.best_model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(states[-1] / "best.keras", tmp)
        os.replace(tmp, self.best_model)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link costs no copy; states are never modified in place, so sharing the file is safe."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _plain(value):
    """JSON-ready: numpy scalars (as Keras callbacks keep their best values) become Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def reopen_live(directory, steps: int, **kwargs):
    """A DVCLive ``Live`` whose next row is step ``steps`` (a fresh one when 0).

    Rows at or after ``steps`` were logged by an epoch whose state was never saved: that epoch runs
    again, so they are dropped, and the curves stay one row per epoch. The step is set explicitly
    because dvclive resumes a run that logged a single step at step 0 again.
    """
    from dvclive import Live

    directory = Path(directory)
    if steps == 0:
        shutil.rmtree(directory, ignore_errors=True)
    for tsv in sorted((directory / "plots" / "metrics").rglob("*.tsv")):
        header, *rows = tsv.read_text().splitlines(keepends=True)
        col = header.rstrip("\r\n").split("\t").index("step")
        kept = [row for row in rows if int(row.split("\t")[col]) < steps]
        if len(kept) < len(rows):
            tmp = tsv.with_name(f".{tsv.name}.tmp")
            tmp.write_text(header + "".join(kept))
            os.replace(tmp, tsv)
    live = Live(str(directory), resume=steps > 0, **kwargs)
    live.step = steps
    return live
