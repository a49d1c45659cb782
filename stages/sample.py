"""Stage `sample`: generate the embedded data set in Kaggle's layout (data/sample): Quick, Draw!
doodles by default, or Digit Recognizer digits with ``sample.kind: digits``."""

from __future__ import annotations

import time

from tqdm import tqdm

from doodle.core.params import load_section, read_params
from doodle.core.paths import SAMPLE
from doodle.sample.generate import SampleParams, generate
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cfg = load_section(SampleParams, "sample", read_params(args.params))
    t0 = time.perf_counter()
    total = (cfg.train_per_class + cfg.test_per_class) * len(cfg.class_names())
    with tqdm(total=total, unit="drawing", desc=f"sample {cfg.kind}", disable=args.quiet) as bar:
        counts = generate(SAMPLE, cfg, bar.update)
    print(
        f"sample ({cfg.kind}): {counts['classes']} classes, {counts['train_rows']:,} train rows "
        f"({counts['corrupted_rows']} deliberately broken), {counts['test_rows']:,} test rows "
        f"-> {SAMPLE} in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    cli.run(main)
