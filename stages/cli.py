"""What every stage's command line shares: ``--params``, ``--quiet``, ``--debug``, logging set-up,
turning expected errors into one line, writing metrics/ and reports/; and the environment to run a
stage in a child process (tests and benchmarks). Not a stage itself."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from doodle.core.errors import UserError

DEBUG_ENV = "DOODLE_DEBUG"
REPO = Path(__file__).resolve().parents[1]


def prog() -> str | None:
    """``python -m stages.<name>`` when run that way (argv[0] is then the stage's file), for usage lines."""
    path = Path(sys.argv[0])
    return f"python -m stages.{path.stem}" if path.parent.name == "stages" and path.suffix == ".py" else None


def plain_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the whole module docstring, paragraphs kept."""
    return argparse.ArgumentParser(
        prog=prog(),
        description=(doc or "").strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A stage's parser: the docstring as description and the options every stage shares. Parse
    before importing the framework-heavy library modules, so ``--help`` is instant."""
    p = plain_parser(doc)
    p.epilog = f"Params are read from params.yaml; see README.md. {DEBUG_ENV}=1 works like --debug."
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    return p


def setup_logging() -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return logging.getLogger("stages")


def write_metrics(stage: str, values: dict, headline: tuple[str, ...], root: Path = Path(".")) -> None:
    """``metrics/<stage>.json``: the ``headline`` values only, the numbers runs are compared by.
    ``dvc metrics show`` prints one column per key across every stage, so a few keys keep it
    readable in a terminal. Everything, timings and counts included, goes to
    ``reports/<stage>.json`` (not a DVC metric, so a rerun that only took a different time
    changes nothing people compare)."""
    files = [("reports", values)]
    if headline:
        files.append(("metrics", {k: values[k] for k in headline if k in values}))
    for folder, data in files:
        path = root / folder / f"{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def report(stage: str, result) -> None:
    """Write a run's :class:`doodle.core.report.StageResult` (:func:`write_metrics`) and print its line."""
    write_metrics(stage, result.values, headline=result.headline)
    print(result.line, flush=True)


def _debugging() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main) -> None:
    """Call ``main()``; turn the errors a user can fix (:class:`doodle.core.errors.UserError`: bad
    params, bad input, a worker that died; and missing files) into one clear line and exit 2. The traceback, a worker
    process's included, is printed only with ``--debug`` or DOODLE_DEBUG=1."""
    try:
        main()
    except (UserError, FileNotFoundError) as exc:
        if _debugging():
            traceback.print_exc()
            if getattr(exc, "worker_traceback", None):
                print(f"in the worker process:\n{exc.worker_traceback}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def subprocess_env() -> dict:
    """The environment for running this checkout's stages in a child process (tests and benchmarks
    alike): the repo importable, this Python's scripts (dvc) first on PATH, TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
