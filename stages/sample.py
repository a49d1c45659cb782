"""Stage `sample`: generate the embedded data set in Kaggle's layout (data/sample): Quick, Draw!
doodles by default, or Digit Recognizer digits with ``sample.kind: digits``. The run: doodle.sample.run."""

from __future__ import annotations

from doodle.core.params import load_section, read_params
from doodle.core.paths import SAMPLE
from doodle.sample.generate import SampleParams
from doodle.sample.run import run
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cfg = load_section(SampleParams, "sample", read_params(args.params))
    cli.report("sample", run(SAMPLE, cfg, progress=not args.quiet))


if __name__ == "__main__":
    cli.run(main)
