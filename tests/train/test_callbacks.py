"""The progress of long epochs: images/s and the time left, printed by a fake clock's timing."""

import numpy as np

from doodle.train.callbacks import StepProgress, duration


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def progress(epochs=3, steps=100, budget=None, every=60.0):
    clock, said = FakeClock(), []
    cb = StepProgress(steps, 128, epochs, budget, every_s=every, clock=clock, printer=lambda *a, **k: said.append(a[0]))
    return cb, clock, said


def run_epoch(cb, clock, epoch, steps, step_s):
    cb.on_epoch_begin(epoch)
    for b in range(steps):
        clock.now += step_s
        cb.on_train_batch_end(b, {"loss": 1.0})
    cb.on_epoch_end(epoch, {})


def test_durations_read_well():
    assert [duration(s) for s in (0, 42.4, 425, 3600 * 3 + 600 + 59)] == ["0s", "42s", "7m05s", "3h10m"]


def test_long_epochs_print_speed_and_time_left_every_interval():
    cb, clock, said = progress(epochs=3, steps=100)
    cb.on_train_begin()
    run_epoch(cb, clock, 0, 100, 2.0)  # 200 s an epoch, 64 img/s
    # a line at 60 s (step 30), 120 s (60), 180 s (90); none at the epoch's last step
    assert len(said) == 3
    assert said[0] == "epoch 1/3: step 30/100, 64 img/s, epoch ends in 2m20s, run in ≤ 9m00s"
    run_epoch(cb, clock, 1, 100, 1.0)  # faster: 100 s, 128 img/s; the run estimate uses the mean epoch (200 s)
    assert said[3] == "epoch 2/3: step 60/100, 128 img/s, epoch ends in 40s, run in ≤ 4m00s"


def test_short_epochs_print_nothing_and_the_budget_caps_the_run():
    cb, clock, said = progress(epochs=50, steps=20)
    cb.on_train_begin()
    run_epoch(cb, clock, 0, 20, 1.0)  # 20 s epochs: under the 60 s interval
    assert said == []
    cb, clock, said = progress(epochs=50, steps=100, budget=500)
    cb.on_train_begin()
    run_epoch(cb, clock, 0, 100, 2.0)
    assert said[0].endswith("run in ≤ 7m20s")  # 500 s budget - 60 s spent, not 49 more epochs


def test_the_stages_callbacks_leave_keras_dispatching_steps_asynchronously(tmp_path):
    """Keras dispatches each step's callbacks on a thread of its own, so the training loop never waits
    for the device to read a step's logs, unless a callback has a step hook and is not ``async_safe``
    (keras.callbacks.CallbackList): none of the train stage's may be such, BatchNorm recalibration and
    the time budget included."""
    import keras

    from doodle.batches.cache import CacheSplit
    from doodle.batches.stream import BatchStream
    from doodle.models import build_model
    from doodle.train.compile import fit_callbacks
    from doodle.train.params import TrainParams

    model = build_model("seed_cnn", (32, 32, 1), 3, width=0.125)  # BatchNorm: recalibrated every epoch
    images = [np.zeros((64, 32, 32, 1), np.uint8)]
    split = CacheSplit(images, [np.arange(64, dtype=np.int16) % 3], [np.arange(64, dtype=np.int64)])
    train = BatchStream(split, 16, shuffle=True, seed=0, steps=4)
    cfg = TrainParams(time_budget_s=60, bn_recalibration_batches=2)
    callbacks = fit_callbacks(cfg, model, train, 16, "f", tmp_path / "b", tmp_path / "best.keras", tmp_path / "live")
    assert callbacks.recalibration in callbacks.all and callbacks.budget in callbacks.all
    hooks = ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end")
    waiting = [
        type(cb).__name__
        for cb in callbacks.all
        if not getattr(cb, "async_safe", False)
        and any(getattr(type(cb), h) is not getattr(keras.callbacks.Callback, h) for h in hooks)
    ]
    assert not waiting, f"these make every step wait for the device: {waiting}"
    callbacks.live.end()
