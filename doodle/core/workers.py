"""Forked worker processes for the stages' parallel passes, behind one helper: :func:`fork_map`.

The shard stage (both passes) and the render stage split their work over processes, since the
parsing and drawing kernels hold the GIL only briefly but the Arrow and numpy glue around them
does not. All of them need the same things: items dealt from a queue biggest-first, results as
they finish, progress ticks for a tqdm bar, a worker's exception raised in the parent (its
traceback kept for ``--debug``, not printed), and a clear error when a worker is killed (out of
memory) instead of a hang. Workers are forked, so ``work`` and what it closes over are
inherited, never pickled; only results, progress and errors cross the process boundary.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import UserError


def worker_count(workers: int | None) -> int:
    """The processes to start for a ``workers`` param: the number given, or one per CPU core for
    ``null`` (``shard.workers``, ``render.workers``)."""
    return workers or os.cpu_count() or 1


log = logging.getLogger(__name__)

#: ``work(worker_index, items, progress)``: handle each item of ``items`` (an iterator shared
#: with the other workers through a queue), yield one result per item or per whatever unit the
#: caller wants, and call ``progress(n)`` to advance the caller's progress bar.
Work = Callable[[int, Iterator[Any], Callable[[int], None]], Iterable[Any]]


class WorkerDied(UserError, RuntimeError):
    """A worker process ended without reporting (killed by the OS, usually for memory)."""


def fork_map(
    work: Work,
    items: Iterable[Any],
    workers: int,
    progress: Callable[[int], None] | None = None,
    setup: Callable[[], None] | None = None,
    what: str = "worker",
    hint: str = "",
) -> Iterator[Any]:
    """Yield everything ``work`` yields, running it in ``workers`` forked processes that share
    ``items`` in the given order; results arrive in completion order.

    With one worker (or one item) ``work`` runs in this process, so a single-core run, a debugger
    and a profiler see plain calls. ``setup`` runs first in each forked worker. An exception in
    a worker is raised here as itself (when it pickles) with the worker's traceback attached as
    ``exc.worker_traceback``; a worker that dies names ``what`` and ``hint`` in its error."""
    items = list(items)
    progress = progress or (lambda n: None)
    if workers <= 1 or len(items) <= 1:
        yield from work(0, iter(items), progress)
        return
    workers = min(workers, len(items))
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    for item in items:
        tasks.put(item)
    for _ in range(workers):
        tasks.put(_END)
    procs = [ctx.Process(target=_worker, args=(work, w, tasks, results, setup), daemon=True) for w in range(workers)]
    for proc in procs:
        proc.start()
    running = set(range(workers))
    try:
        while running:
            try:
                kind, *payload = results.get(timeout=0.5)
            except queue.Empty:
                dead = [w for w in sorted(running) if procs[w].exitcode not in (None, 0)]
                if dead:
                    code = procs[dead[0]].exitcode
                    raise WorkerDied(
                        f"{what} process {dead[0]} died (exit code {code}"
                        + (f", killed by signal {-code}" if code < 0 else "")
                        + (f"; out of memory? {hint}" if hint else "")
                        + ")"
                    ) from None
                continue
            if kind == "progress":
                progress(payload[0])
            elif kind == "result":
                yield payload[0]
            elif kind == "done":
                running.discard(payload[0])
            else:  # "error"
                exc, tb = payload
                log.debug("%s process failed:\n%s", what, tb)
                raise raised_in_child(exc, tb, f"{what} process")
    finally:
        for proc in procs:
            if running and proc.is_alive():  # stopped early: an error, or the caller stopped reading
                proc.terminate()
            proc.join()


_END = None  # the queue's end-of-work marker (one per worker)


def _worker(work: Work, index: int, tasks, results, setup) -> None:
    try:
        if setup is not None:
            setup()
        for result in work(index, iter(tasks.get, _END), lambda n: results.put(("progress", n))):
            results.put(("result", result))
        results.put(("done", index))
    except BaseException as exc:  # report, then let the parent raise it
        results.put(("error", picklable(exc), traceback.format_exc()))


class ChildTraceback(Exception):
    """The traceback of an exception raised in a child process, shown as that exception's cause."""

    def __str__(self) -> str:
        return self.args[0]


def raised_in_child(exc: BaseException, tb: str, where: str) -> BaseException:
    """``exc``, sent by a child process with its traceback ``tb``, made ready to raise in the parent:
    ``tb`` attached as ``worker_traceback`` (the stage prints it with ``--debug`` under a one-line
    UserError) and, for any other exception (a bug), as its cause, so Python prints where in the
    child it was raised, not only where the parent re-raised it."""
    exc.worker_traceback = tb
    if not isinstance(exc, UserError):
        exc.__cause__ = ChildTraceback(f"in the {where}:\n{tb}")
    return exc


def picklable(exc: BaseException) -> BaseException:
    """``exc`` when it crosses a process boundary intact, else a RuntimeError that names it: what a
    child process sends its parent to raise (with the traceback attached as ``worker_traceback``)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
