"""The score command's run: a submission's MAP@3 against an answers file, as Kaggle scores it
(doodle.predict.submission.score_submission: every answer scored, two swapped files named)."""

from __future__ import annotations

from pathlib import Path

from doodle.core.report import StageResult
from doodle.predict.submission import score_submission


def run(submission: Path, labels: Path) -> StageResult:
    """The score and the rows scored, and the command's line. Nothing is written: ``score`` is a
    tool beside the pipeline (it scores any submission file), not a DVC stage."""
    score, n = score_submission(submission, labels)
    return StageResult({"map_at_3": score, "rows": n}, (), f"MAP@3 {score:.5f} over {n:,} rows")
