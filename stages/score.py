"""Score a submission: MAP@3 of SUBMISSION (key_id,word) against LABELS (key_id,word answers).

python -m stages.score submissions/submission.csv data/sample/test_labels.csv
"""

from __future__ import annotations

import argparse

from doodle.submission import score_submission
from stages import _cli


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="MAP@3 of a Kaggle Quick Draw submission against answers")
    p.add_argument("submission")
    p.add_argument("labels")
    args = p.parse_args(argv)
    score, n = score_submission(args.submission, args.labels)
    print(f"MAP@3 {score:.5f} over {n:,} rows")


if __name__ == "__main__":
    _cli.run(main)
