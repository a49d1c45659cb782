"""Stage `evaluate`: score the blend predict made on the validation shards and draw the error analysis.

metrics/eval.json (MAP@3, top-1, top-3 of the blend, and with several models each one's MAP@3 alone:
scalars only, so `dvc metrics show` fits a terminal) of the first ``evaluate.max_rows`` validation
drawings (a uniform sample: the shards are shuffled); reports/ (per-class accuracy worst first,
confusion data for `dvc plots`, most-confused pairs, a gallery of mistakes, confidence histograms),
all of the blend. reports/embedding.png and reports/activations.png show what the first model sees
(doodle.evaluate.views, params section ``evaluate``): its penultimate features of the first
``evaluate.embedding_samples`` validation drawings in 2-D, and its first conv layers' activations.

The models and their weights are those predict recorded in reports/blend.json. A stroke-sequence
model reads the same validation drawings encoded from the validation shards by its own encoder; the
reports still show their cached images. The run: doodle.evaluate.run.
"""

from __future__ import annotations

from doodle.core.params import load_section, read_params
from doodle.core.paths import BLEND, CACHE, REPORTS, SHARDS
from doodle.evaluate.params import EvaluateParams
from doodle.evaluate.run import EvaluateFiles, run
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    cfg = load_section(EvaluateParams, "evaluate", read_params(args.params))
    files = EvaluateFiles(CACHE, SHARDS, BLEND, REPORTS)
    cli.report("eval", run(cfg, files, progress=not args.quiet))


if __name__ == "__main__":
    cli.run(main)
