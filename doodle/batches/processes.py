"""Training batches made in worker processes, in the stream's own order.

Making a batch on the fly takes Python's lock many times (gathering the drawings, numpy, handing
slices to the drawing threads): on a thread beside a training loop that keeps the lock busy it
starves (docs/performance.md, "Where the full path's time goes"), and within one process it stops
growing at about two cores. :class:`ProcessStream` makes a training stream's batches in ``processes``
processes, each with its own lock: process ``p`` runs the same seeded stream as the worker ``p`` of
``processes`` (:class:`doodle.batches.strokes.StrokeStream` draws only that worker's batches, ``p``,
``p + processes``, ..., and keeps the random numbers of the others), so taking one batch from each
in turn gives exactly the batches of the stream itself, whatever the number of processes: the same
images, in the same order, a resumed epoch included. A multi-worker stream (worker ``w`` of ``W``,
taking batches ``w, w + W, ...``) is shared out the same way: process ``p`` is worker ``w + W p`` of
``W N``, so the machine's batches are the same whatever its number of processes.

Each process writes its batches into ``slots`` buffers of shared memory and says which one is
ready; the consumer copies the batch out (so nothing it holds is overwritten) and hands the buffer
back. Processes are spawned (the training process has TensorFlow or JAX threads running: forking
it is not safe) and live from the first epoch to :meth:`ProcessStream.close`; an epoch started
anew (Keras restarts one it peeked at) tells them to drop what they were making. An error in a
process is raised by the consumer as itself (a bad param or input is then one line, as when the batch
is made in the training process), the process's traceback attached (``worker_traceback``, printed
with ``--debug``; for any other error also as its cause: doodle.core.workers.raised_in_child); a
process that dies is named; and
a process whose training process is killed (a lost notebook kernel, the OOM killer) ends on its own
within :data:`_POLL_S`, its shared memory then freed by Python's resource tracker.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from doodle.core.errors import UserError
from doodle.core.workers import picklable, raised_in_child

from .batching import Stream, aligned_empty

_POLL_S = 0.1  # how often a waiting process looks for a new command, the consumer for a dead process


class InputProcessDied(UserError, RuntimeError):
    """A batch-making process ended without a word (killed by the OS, usually for memory)."""


@dataclass
class _Maker:
    process: Any
    commands: Any
    free: Any
    ready: Any
    memory: list
    images: list
    labels: list


class ProcessStream(Stream):
    """``stream``'s batches made by ``processes`` worker processes (see the module's docstring)."""

    def __init__(self, stream, processes: int, slots: int = 2):
        if processes < 1 or slots < 1:
            raise ValueError(f"processes and slots must be >= 1, got {processes} and {slots}")
        if not getattr(stream, "shuffle", False):
            raise ValueError("only a training stream (shuffle=True) is made in processes")
        self.stream, self.processes, self.slots = stream, processes, slots
        self.workers, self.worker = getattr(stream, "workers", 1), getattr(stream, "worker", 0)
        self.batch_size, self.image_shape, self.dtype = stream.batch_size, stream.image_shape, stream.dtype
        self.steps, self.rows = len(stream), stream.rows
        self._makers: list[_Maker] = []
        self._generation = 0
        self._finalizer = None

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int = 0, own: bool = True):
        """This machine's batches of ``epoch``, made by the processes; ``own=False`` on a multi-worker
        stream: every worker's batches, made here (BatchNorm recalibration reads a few)."""
        if not own and self.workers > 1:
            yield from self.stream.epoch(epoch, own=False)
            return
        if not self._makers:
            self._start()
        self._generation += 1
        generation = self._generation
        for maker in self._makers:
            maker.commands.put(("epoch", epoch, generation))
        for i in range(self.steps):
            maker = self._makers[i % self.processes]
            _, slot, rows = self._next_batch(i % self.processes, maker, generation)
            x = aligned_empty((rows, *self.image_shape), self.dtype)
            x[:] = maker.images[slot][:rows]
            y = maker.labels[slot][:rows].copy()
            maker.free.put(slot)
            yield x, y

    def _next_batch(self, index: int, maker: _Maker, generation: int):
        while True:
            try:
                message = maker.ready.get(timeout=_POLL_S)
            except queue.Empty:
                if not maker.process.is_alive():
                    raise InputProcessDied(
                        f"batch-making process {index} died (exit code {maker.process.exitcode}): "
                        "out of memory? Lower train.input_processes or train.batch_size"
                    ) from None
                continue
            kind, made_for = message[0], message[1]
            if made_for != generation:  # made for an epoch since dropped: its buffer is free again
                if kind == "batch":
                    maker.free.put(message[2])
                continue
            if kind == "error":
                raise raised_in_child(message[2], message[3], f"batch-making process {index}")
            if kind == "end":
                raise RuntimeError(f"batch-making process {index} ended its epoch early")
            return message[1:]

    def _start(self) -> None:
        context = mp.get_context("spawn")
        image_bytes = _image_bytes(self.batch_size, self.image_shape, self.dtype)
        share = math.ceil(self.steps / self.processes)  # each process's batches: a few more than used
        for p in range(self.processes):
            memory = [
                shared_memory.SharedMemory(create=True, size=image_bytes + 4 * self.batch_size)
                for _ in range(self.slots)
            ]
            commands, free, ready = context.Queue(), context.Queue(), context.Queue()
            for slot in range(self.slots):
                free.put(slot)
            args = (self.stream, self.processes, p, share, [m.name for m in memory], commands, free, ready)
            process = context.Process(target=_make_batches, args=args, name=f"doodle-batches-{p}", daemon=True)
            process.start()
            images, labels = _views(memory, self.batch_size, self.image_shape, self.dtype)
            self._makers.append(_Maker(process, commands, free, ready, memory, images, labels))
        self._finalizer = weakref.finalize(self, _stop, self._makers)

    def close(self) -> None:
        """Stop the processes and free their shared memory (also done when the stream is collected)."""
        if self._finalizer is not None:
            self._finalizer()
        self._makers = []


def _image_bytes(batch: int, shape: tuple, dtype) -> int:
    """A slot's image part; its ``batch`` int32 labels follow."""
    return batch * math.prod(shape) * np.dtype(dtype).itemsize


def _views(memory: list, batch: int, shape: tuple, dtype) -> tuple[list, list]:
    image_bytes = _image_bytes(batch, shape, dtype)
    images = [np.ndarray((batch, *shape), dtype, buffer=m.buf) for m in memory]
    labels = [np.ndarray((batch,), np.int32, buffer=m.buf, offset=image_bytes) for m in memory]
    return images, labels


def _stop(makers: list[_Maker]) -> None:
    for maker in makers:
        maker.commands.put(("stop",))
    for maker in makers:
        maker.process.join(timeout=5)
        if maker.process.is_alive():
            maker.process.terminate()
            maker.process.join()
        for m in maker.memory:
            m.close()
            m.unlink()


def _make_batches(stream, processes: int, index: int, share: int, names: list[str], commands, free, ready) -> None:
    """A worker process: on ("epoch", e, generation), make its share of epoch ``e``'s batches into
    free buffers until done or told otherwise; on ("stop",), end."""
    workers, worker = stream.workers, stream.worker  # this machine's share of a multi-worker stream (or 1, 0)
    stream.workers, stream.worker, stream.steps = workers * processes, worker + workers * index, share
    stream.threads = max(1, stream.threads // processes)  # the machine's cores, shared out
    memory = [shared_memory.SharedMemory(name=n) for n in names]
    images, labels = _views(memory, stream.batch_size, stream.image_shape, stream.dtype)
    command = _next_command(commands)
    while command[0] != "stop":
        _, epoch, generation = command
        command = None
        try:
            for x, y in stream.epoch(epoch):
                slot, command = _free_slot(free, commands)
                if command is not None:  # a new command: this epoch is dropped
                    break
                images[slot][: len(y)] = x
                labels[slot][: len(y)] = y
                ready.put(("batch", generation, slot, len(y)))
            else:
                ready.put(("end", generation))
        except Exception as exc:
            ready.put(("error", generation, picklable(exc), traceback.format_exc()))
        command = command or _next_command(commands)
    del images, labels
    for m in memory:
        m.close()


def _next_command(commands) -> tuple:
    """The next command; ("stop",) once the training process is gone (nobody will send one)."""
    while True:
        try:
            return commands.get(timeout=_POLL_S)
        except queue.Empty:
            if not mp.parent_process().is_alive():
                return ("stop",)


def _free_slot(free, commands) -> tuple[int | None, tuple | None]:
    """A free buffer, or the next command if one comes first (("stop",) once the training process is gone)."""
    while True:
        try:
            return free.get(timeout=_POLL_S), None
        except queue.Empty:
            try:
                return None, commands.get_nowait()
            except queue.Empty:
                if not mp.parent_process().is_alive():
                    return None, ("stop",)
