"""The callbacks around ``model.fit`` that report and bound a run: the printed epoch line, the DVCLive
row, progress within long epochs (images/s and time left), and the wall-clock training budget.

The ones that decide or save (BatchNorm recalibration, early stopping, the learning-rate schedule,
the resumable state) live with what they serve: :mod:`doodle.train.batchnorm`, :mod:`doodle.train.resume`.
"""

from __future__ import annotations

import threading
import time

import keras


class _Timed(keras.callbacks.Callback):
    """Times each epoch, for the images/s of the DVCLive row and of the printed line. An epoch the
    time ``budget`` cut short counts only the steps it ran."""

    def __init__(self, steps: int, batch: int, budget: TimeBudget | None = None):
        super().__init__()
        self.steps, self.batch, self.budget = steps, batch, budget
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def elapsed(self) -> tuple[float, float]:
        """(seconds, images/s) since the epoch began."""
        seconds = time.perf_counter() - self.t0
        cut = self.budget.cut_at_step if self.budget else None
        images = (self.steps if cut is None else cut + 1) * self.batch
        return seconds, images / seconds if seconds else 0.0


class LiveLog(_Timed):
    """One DVCLive row per epoch (metrics, learning rate, images/s) for `dvc plots` / `dvc metrics`.

    Put it before ``TrainingState``: a row is then never missing after a kill, and a row whose epoch
    was not saved is dropped on resume (``doodle.train.resume.reopen_live``).
    """

    def __init__(self, live, steps: int, batch: int, budget: TimeBudget | None = None):
        super().__init__(steps, batch, budget)
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        # The rate this epoch trained with. ReduceLROnPlateau (first in the list) has already logged it,
        # before lowering it for the next epoch; for the other schedules it is read here. Set in `logs`
        # itself, so the saved history and the printed line show the same value.
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        for k, v in logs.items():
            split = "val" if k.startswith("val_") else "train"
            self.live.log_metric(f"{split}/{k.removeprefix('val_')}", float(v))
        self.live.log_metric("images_per_s", self.elapsed()[1])
        self.live.next_step()


class EpochLog(_Timed):
    """The ``epoch i/N done:`` line. Put it after ``TrainingState``: a printed epoch survives a kill."""

    def __init__(self, steps: int, batch: int, epochs: int, budget: TimeBudget | None = None, printer=print):
        super().__init__(steps, batch, budget)
        self.epochs = epochs
        self.printer = printer

    def on_epoch_end(self, epoch, logs=None):
        seconds, speed = self.elapsed()
        lr = logs.get("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
        self.printer(
            f"epoch {epoch + 1}/{self.epochs} done: {shown} lr={lr:.2e} {seconds:.1f}s {speed:,.0f} img/s",
            flush=True,
        )


class TimeBudget(keras.callbacks.Callback):
    """Stop at an epoch end when the next epoch would end past ``budget_s`` seconds of training, or
    within an epoch when the budget runs out in it.

    The clock starts when ``fit`` starts (this process's training: a resumed run gets the budget
    anew). The next epoch is estimated as the longest epoch so far, leaving out the first one
    (tracing and warm-up) once there are others, so the estimate errs long. Each epoch is measured
    from one epoch end to the next, so validation and the other callbacks' work count too. Put it
    before ``TrainingState``, so a stop is saved with the epoch.

    An epoch longer than what is left of the budget (the first of a Kaggle route on a CPU: 800 steps
    of 680 at 160 images/s is an hour) is cut at the first step past the budget: Keras then validates
    it and ends it as usual, so the best model, the curves and the resume state count it as an epoch,
    and the run is finished. Only the validation after the cut runs past the budget.

    ``async_safe``: its step hook reads only the clock, never the step's logs, so Keras may run it
    on its callback thread while the next step is dispatched (the cut then lands a step or two
    later); a lock keeps the cut to one.
    """

    async_safe = True

    def __init__(self, budget_s: float, clock=time.perf_counter, printer=print):
        super().__init__()
        self.budget_s = float(budget_s)
        self.clock = clock
        self.printer = printer
        self.t0 = self.last = 0.0
        self.durations: list[float] = []
        self.elapsed_s = 0.0  # from the start of training to the end of the last epoch
        self.stopped_epoch: int | None = None  # 0-based epoch after which the budget stopped training
        self.epoch = 0
        self.cut_at_step: int | None = None  # the step after which the budget cut an epoch short
        self.lock = threading.Lock()

    def on_train_begin(self, logs=None):
        self.t0 = self.last = self.clock()
        self.durations = []
        self.elapsed_s = 0.0
        self.stopped_epoch = None
        self.epoch = 0
        self.cut_at_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.cut_at_step is not None or self.clock() - self.t0 <= self.budget_s:
            return
        with self.lock:
            if self.cut_at_step is not None:
                return
            self.cut_at_step, self.stopped_epoch = batch, self.epoch
            self.model.stop_training = True
            self.printer(
                f"time budget: the {self.budget_s:.0f}s budget ran out at step {batch + 1} of epoch "
                f"{self.epoch + 1}: the epoch ends here (validated as usual) and training stops",
                flush=True,
            )

    def next_epoch_s(self) -> float:
        """The estimated length of the next epoch, in seconds."""
        return max(self.durations[1:] or self.durations)

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.durations.append(now - self.last)
        self.last = now
        elapsed = self.elapsed_s = now - self.t0
        if self.cut_at_step is not None:  # cut short within this epoch (on_train_batch_end said so)
            return
        if elapsed > self.budget_s:
            self.printer(
                f"WARNING time budget: epoch {epoch + 1} ended at {elapsed:.0f}s, past the {self.budget_s:.0f}s "
                "budget: shorten the epochs (train.steps_per_epoch)",
                flush=True,
            )
        if elapsed + self.next_epoch_s() > self.budget_s:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            self.printer(
                f"time budget: stopping after epoch {epoch + 1}: {elapsed:.0f}s trained, the next epoch "
                f"(~{self.next_epoch_s():.0f}s) would end past the {self.budget_s:.0f}s budget",
                flush=True,
            )


def duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h10m``: short enough for a progress line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StepProgress(keras.callbacks.Callback):
    """Progress within an epoch: images/s, the time left in the epoch and at most in the run.

    A Kaggle epoch (800 steps of 680 on a GPU, hours on a CPU) is too long to wait for the epoch
    line. Interactive runs get a tqdm bar; ``dvc repro`` runs the stages with ``--quiet``, so there
    a line is printed every ``every_s`` seconds instead, and only within epochs longer than that
    (short runs print nothing more than their epoch lines). The run's time left is an upper bound:
    the remaining epochs at the mean epoch time so far (validation included), capped by
    ``train.time_budget_s``; early stopping may end the run sooner.

    ``async_safe``: Keras may run its step hook on its callback thread (a lock keeps the counts
    whole), so the step's logs (the loss on the bar, every 10 steps) are waited for there, never by
    the training loop.
    """

    async_safe = True

    def __init__(
        self,
        steps_per_epoch: int,
        batch: int,
        epochs: int,
        budget_s: float | None = None,
        bar: bool = False,
        every_s: float = 60.0,
        clock=time.perf_counter,
        printer=print,
    ):
        super().__init__()
        self.steps, self.batch, self.epochs = steps_per_epoch, batch, epochs
        self.budget_s, self.bar, self.every_s = budget_s, bar, every_s
        self.clock, self.printer = clock, printer
        self.t_fit = self.t_epoch = self.last_print = 0.0
        self.epoch = self.epochs_done = 0
        self.tqdm = None
        self.lock = threading.Lock()

    def on_train_begin(self, logs=None):
        self.t_fit = self.clock()
        self.epochs_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.t_epoch = self.last_print = self.clock()
        if self.bar:
            from tqdm import tqdm

            self.tqdm = tqdm(
                total=self.steps * self.batch,
                unit="img",
                unit_scale=True,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
            )

    def status(self, step: int) -> tuple[float, float, float]:
        """(images/s, seconds left in this epoch, at most seconds left in the run) after ``step`` steps."""
        now = self.clock()
        seconds = now - self.t_epoch
        speed = step * self.batch / seconds if seconds > 0 else 0.0
        epoch_left = (self.steps - step) / step * seconds if step else 0.0
        fitted = now - self.t_fit
        epoch_s = (fitted - seconds) / self.epochs_done if self.epochs_done else seconds + epoch_left
        run_left = epoch_left + (self.epochs - self.epoch - 1) * epoch_s
        if self.budget_s:
            run_left = min(run_left, max(0.0, self.budget_s - fitted))
        return speed, epoch_left, run_left

    def on_train_batch_end(self, batch, logs=None):
        with self.lock:
            self._step_done(batch + 1, logs)

    def _step_done(self, step: int, logs) -> None:
        if self.tqdm is not None:
            self.tqdm.update(self.batch)
            if step % 10 == 0 or step == self.steps:
                _, _, run_left = self.status(step)
                loss = (logs or {}).get("loss")
                self.tqdm.set_postfix_str(
                    (f"loss {float(loss):.4f}, " if loss is not None else "") + f"run ≤ {duration(run_left)}",
                    refresh=False,
                )
            return
        now = self.clock()
        if now - self.last_print >= self.every_s and step < self.steps:
            self.last_print = now
            speed, epoch_left, run_left = self.status(step)
            self.printer(
                f"epoch {self.epoch + 1}/{self.epochs}: step {step:,}/{self.steps:,}, {speed:,.0f} img/s, "
                f"epoch ends in {duration(epoch_left)}, run in ≤ {duration(run_left)}",
                flush=True,
            )

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done += 1
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None

    def on_train_end(self, logs=None):
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None
