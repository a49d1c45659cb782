"""Score a submission: MAP@3 of SUBMISSION (key_id,word) against LABELS (key_id,word answers).

python -m stages.score submissions/submission.csv data/sample/test_labels.csv
"""

from __future__ import annotations

from doodle.predict.submission import score_submission
from stages import cli


def main(argv=None) -> None:
    p = cli.plain_parser(__doc__)
    p.add_argument("submission", help="the submission: key_id,word with three labels a row")
    p.add_argument("labels", help="the answers: key_id,word with the true class a row")
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    args = p.parse_args(argv)
    score, n = score_submission(args.submission, args.labels)
    print(f"MAP@3 {score:.5f} over {n:,} rows")


if __name__ == "__main__":
    cli.run(main)
