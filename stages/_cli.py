"""What every stage's command line shares: ``--params`` and logging set-up."""

from __future__ import annotations

import argparse
import logging
import sys


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        epilog="Params are read from params.yaml; see README.md.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def setup_logging() -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return logging.getLogger("stages")


def run(main) -> None:
    """Call ``main()``; turn the project's expected errors into one clear line and exit code 2."""
    from doodle.params import ParamError
    from doodle.sources import SourceError

    try:
        main()
    except (ParamError, SourceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
