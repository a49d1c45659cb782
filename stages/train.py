"""Stage `train@<name>`: train model ``<name>`` of params.yaml's ``models`` (models/<name>/model.keras
+ metadata). dvc.yaml runs it once per model (``foreach``); ``--model NAME`` picks the model (needed
only when params.yaml names several). Its train params are the ``train`` section with the model's
recipe and overrides merged in (doodle.lineup).

Rerunning after a kill resumes from the last completed epoch and ends with the same model, history
and curves as an uninterrupted run (see doodle.train.resume).

``train.strategy: multi_worker`` trains on several machines: run this same command on each, with
``TF_CONFIG`` naming the cluster and the machine's place in it. ``train.batch_size`` is per replica,
so the global batch is ``batch_size`` x replicas over all workers; each worker draws its share of it
(doodle.batches.stream) and validates on the whole validation set. Only the chief (worker 0) writes the
model, its metadata, the metrics, the DVCLive files and the resume backup; the others run the same
saves (they take part in collective operations) into a scratch directory deleted at the end. A
multi-worker run does not resume: it starts again from epoch 0.

``train.folds`` K and ``train.seeds`` N: with K x N > 1 the stage trains K x N members
(doodle.train.ensemble), each as the single model is (doodle.train.trainer), into models/<name>/members/,
and models/<name>/model.keras is a copy of the reference member. metrics/train/<name>.json has the
mean and standard deviation of the members' val MAP@3 and the out-of-fold MAP@3;
reports/train/<name>.json every member's figures.
"""

from __future__ import annotations

from pathlib import Path

from doodle.core.params import load_section, read_params
from stages import cli


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    p.add_argument("--model", help="which model of params.yaml's `models` to train (default: the only one)")
    args = p.parse_args(argv)
    # The library is imported once the arguments are parsed: it loads TensorFlow (seconds), which
    # --help does not need.
    from doodle import lineup
    from doodle.core.paths import CACHE, SHARDS
    from doodle.render.params import RenderSection
    from doodle.train.run import run

    cli.setup_logging()
    params = read_params(args.params)
    name = lineup.chosen(params, args.model)
    cfg = lineup.train_params(params, name)
    render_cfg = load_section(RenderSection, "render", params)

    def report(result) -> None:
        cli.report(f"train/{name}", result)

    run(cfg, render_cfg, lambda root: train_files(root, name), CACHE, SHARDS, report, progress=not args.quiet)


def train_files(root: Path, name: str):
    """Where model ``name``'s run writes, under ``root``: the project for the chief, a scratch folder
    for the other workers of a multi-worker run; the layout of doodle.core.paths (dvc.yaml's outs)."""
    from doodle.core.paths import BACKUP, DVCLIVE, MEMBERS, META_FILE, MODEL_FILE, REPORTS, model_dir
    from doodle.train.ensemble import TrainFiles

    folder = root / model_dir(name)
    return TrainFiles(
        root,
        model=folder / MODEL_FILE,
        meta=folder / META_FILE,
        backup=root / BACKUP / name,
        live=root / DVCLIVE / name,
        members=folder / MEMBERS,
        oof=folder / MEMBERS / "oof.parquet",
        curves=root / REPORTS / "train" / f"{name}_curves.png",
    )


if __name__ == "__main__":
    cli.run(main)
