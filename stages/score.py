"""Score a submission: MAP@3 of SUBMISSION (key_id,word) against LABELS (key_id,word answers).

python -m stages.score submissions/submission.csv data/sample/test_labels.csv
"""

from __future__ import annotations

from pathlib import Path

from doodle.score.run import run
from stages import cli


def main(argv=None) -> None:
    p = cli.plain_parser(__doc__)
    p.add_argument("submission", type=Path, help="the submission: key_id,word with three labels a row")
    p.add_argument("labels", type=Path, help="the answers: key_id,word with the true class a row")
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    args = p.parse_args(argv)
    print(run(args.submission, args.labels).line)


if __name__ == "__main__":
    cli.run(main)
