"""What a stage's run hands back to its command line, the same for every stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageResult:
    """A finished run: every figure (reports/<stage>.json), the keys runs are compared by
    (metrics/<stage>.json, what ``dvc metrics show`` prints), and its one summary line."""

    values: dict
    headline: tuple[str, ...]
    line: str
