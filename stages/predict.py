"""Stage `predict`: render and classify the test set; write the top-3 Kaggle submission CSV.

Also writes the top-k probabilities (parquet, for blending) and, when the source has answers
(the embedded sample's test_labels.csv), the test MAP@3.

A Digit Recognizer source gets Kaggle's ``ImageId,Label`` file instead (test.csv read in order:
ImageId is the row number), scored for accuracy and MAP@3 when a test_labels.csv is present. A
source without a test set (numpy_bitmap, an ndjson folder) has nothing to submit: the stage says
so, writes no submission, and removes one left by an earlier source. The run: doodle.predict.run.

With several models (params.yaml's ``models``), their probabilities are averaged with weights fitted
on the validation shards (``predict.weights: fit``, the default); reports/blend.json records the
models, their files and weights, and each one's and the blend's validation MAP@3.
"""

from __future__ import annotations

from doodle import lineup
from doodle.core.params import load_section, read_params
from doodle.core.paths import BLEND, MODELS, PROBABILITIES, SAMPLE, SHARDS, SUBMISSION
from doodle.predict.run import PredictFiles, PredictParams, run
from doodle.sources.folder import DataParams, resolve_source
from stages import cli


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    cli.setup_logging()
    params = read_params(args.params)
    cfg = load_section(PredictParams, "predict", params)
    data = load_section(DataParams, "data", params)
    names = lineup.names(params) if cfg.models == "auto" else []  # the models section, when it picks them
    files = PredictFiles(SHARDS, MODELS, names, SUBMISSION, PROBABILITIES, BLEND)
    cli.report("test", run(cfg, resolve_source(data.source, data.kind, SAMPLE), files, progress=not args.quiet))


if __name__ == "__main__":
    cli.run(main)
