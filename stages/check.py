"""Stage `check`: every params.yaml section and data.source, checked before any other stage runs.

Every stage of dvc.yaml depends on this stage's output, so ``dvc repro`` and ``dvc exp run`` run it
first, and a mistake anywhere in params.yaml (an unknown key, a wrong type or value, params that
contradict each other) or a data.source that does not exist stops the pipeline with one line
before DVC deletes any stage's outputs: a typo never costs a trained model. It imports no
framework and takes about a second. Its output (reports/params_ok.txt) is the same whenever the
checks pass, so it never reruns the stages after it by itself.

It also writes each model's resolved train section (doodle.lineup: the ``train`` section, the
model's recipe and overrides, its part of a shared time budget) to ``reports/models/<name>.json``,
the dependency of that model's ``train@<name>`` stage: a file changes only when that model's
training would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stages import cli

OK_FILE = Path("reports/params_ok.txt")


def main(argv=None) -> None:
    args = cli.parser(__doc__).parse_args(argv)
    from doodle import lineup
    from doodle.core.params import load_section, read_params
    from doodle.core.paths import RESOLVED_MODELS as RESOLVED
    from doodle.core.paths import SAMPLE
    from doodle.sample.generate import SampleParams
    from doodle.sections import check_all
    from doodle.sources.folder import DataParams, check_source_for_dvc

    params = read_params(args.params)
    data = load_section(DataParams, "data", params)
    kind = check_source_for_dvc(data, load_section(SampleParams, "sample", params).kind, SAMPLE)
    check_all(params, kind)
    OK_FILE.parent.mkdir(parents=True, exist_ok=True)
    OK_FILE.write_text("params.yaml and data.source checked by stages.check\n")
    shutil.rmtree(RESOLVED, ignore_errors=True)  # a model taken out of params.yaml leaves no file
    RESOLVED.mkdir(parents=True)
    names = lineup.names(params)
    for name in names:
        resolved = json.dumps(lineup.resolved(params, name), indent=2, sort_keys=True)
        (RESOLVED / f"{name}.json").write_text(resolved + "\n")
    print(f"check: params.yaml valid; data.source {data.source} ({kind}); models: {', '.join(names)}")


if __name__ == "__main__":
    cli.run(main)
