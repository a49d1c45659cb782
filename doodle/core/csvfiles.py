"""Writing a CSV file: one rule for every table the pipeline writes (class lists, reports, the
sample's files, submissions), so they share one dialect (Python's ``excel``: comma-separated,
``\\r\\n`` line ends, quoting only where needed) and one way to open the file."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable]) -> Path:
    """Write ``header`` then ``rows`` to ``path`` (its folder made if missing); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path
