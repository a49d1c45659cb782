"""Stage `baseline`: a classical PCA + SVM on a bounded sample of the training images, scored on the
validation split the network is scored on.

metrics/baseline.json holds val MAP@3, top-1 and top-3 under the keys metrics/eval.json uses, so
`dvc metrics show` prints the baseline's figures in the network's columns; reports/baseline.json holds
the rest (rows, components, explained variance, support vectors, timings, per-class top-1). See
doodle.baseline.run for the sampling, the features and why the PCA is not whitened.
"""

from __future__ import annotations

from doodle.baseline.run import BaselineParams, run
from doodle.core.params import load_section, read_params
from doodle.core.paths import CACHE, SHARDS
from doodle.render.params import RenderSection
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    params = read_params(args.params)
    cfg = load_section(BaselineParams, "baseline", params)
    render_cfg = load_section(RenderSection, "render", params)
    result = run(CACHE, SHARDS, cfg, render_cfg, progress=not args.quiet, log=lambda line: print(line, flush=True))
    cli.report("baseline", result)


if __name__ == "__main__":
    cli.run(main)
