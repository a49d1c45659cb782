"""Stage `sample`: generate the embedded default data set in Kaggle's layout (data/sample)."""

from __future__ import annotations

import time

from doodle.params import load_section, read_params
from doodle.sample_data import SampleParams, generate
from doodle.sources import SAMPLE_DIR
from stages import _cli


def main(argv=None) -> None:
    args = _cli.parser(__doc__).parse_args(argv)
    cfg = load_section(SampleParams, "sample", read_params(args.params))
    t0 = time.perf_counter()
    counts = generate(SAMPLE_DIR, cfg)
    print(
        f"sample: {counts['classes']} classes, {counts['train_rows']:,} train rows "
        f"({counts['corrupted_rows']} deliberately broken), {counts['test_rows']:,} test rows "
        f"-> {SAMPLE_DIR} in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    _cli.run(main)
