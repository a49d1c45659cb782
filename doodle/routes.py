"""Routes: the full-data configurations, each a recipe (the method, doodle.recipes) plus the data,
shard, validation and run settings it was measured with, applied by one command.

    python -m doodle.routes --list
    python -m doodle.routes kaggle-notebook            # on Kaggle: finds the data, links it, writes params.yaml
    python -m doodle.routes kaggle-gpu --data DIR      # on a GPU box: DIR holds train_simplified/ + test_simplified.csv
    python -m doodle.routes kaggle-gpu-blend --data DIR   # the same, two models blended (one stage each)
    python -m doodle.routes link DIR                   # only the data links (data/raw), no params

Applying a route (1) finds the competition's folder: ``--data auto`` looks where Kaggle mounts it,
``/kaggle/input/competitions/quickdraw-doodle-recognition`` (newer notebooks) or
``/kaggle/input/quickdraw-doodle-recognition`` (older ones), then any folder under ``/kaggle/input``
holding ``train_simplified/`` and ``test_simplified.csv``; (2) links only what the pipeline reads
into ``data/raw`` (:func:`link_view`), file by file, so that DVC hashes the 340 class files and the
test file and never ``train_raw/`` or ``test_raw.csv`` beside them, and never follows a linked folder
(which it would not look inside); (3) writes the route's params into params.yaml, comments kept,
checked as the pipeline's check stage checks them; (4) for the notebook route, moves DVC's cache to
/tmp (``dvc cache dir --local``), off the 20 GB that /kaggle/working keeps. Then ``dvc repro``.
"""

from __future__ import annotations

import argparse
import copy
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doodle.core.errors import UserError
from doodle.recipes import RECIPES, flatten, merge

COMPETITION = "quickdraw-doodle-recognition"
KAGGLE_INPUT = Path("/kaggle/input")
VIEW = Path("data/raw")  # the links the route's data.source names (git-ignored)
MARKER = ".doodle-links"  # in a view: the folder it links to; a view is only replaced when it has one
TRAIN_DIR, TEST_FILE, LABELS_FILE = "train_simplified", "test_simplified.csv", "test_labels.csv"
WHOLE = ("models",)  # sections a route writes whole: its models replace the file's, never join them


class RouteError(UserError, ValueError):
    """The data cannot be found or linked, or the params cannot be written."""


@dataclass(frozen=True)
class Route:
    name: str
    description: str  # one line: where it runs and what it trains
    recipe: str  # the method: a doodle.recipes name
    run: dict[str, Any] = field(default_factory=dict)  # data, shard, validation and run settings (nested)
    dvc_cache: str | None = None  # DVC's cache folder (dvc cache dir --local), None: the project's .dvc/cache
    models: dict[str, Any] | None = None  # the models section it writes whole (doodle.lineup); None: left as is

    def params(self) -> dict[str, Any]:
        """Every override this route writes into params.yaml: the recipe's, then the run's, and its
        models section (which replaces the file's)."""
        out = merge(RECIPES[self.recipe].overrides, self.run)
        if self.models is not None:
            out["models"] = copy.deepcopy(self.models)
        return out


#: What both Kaggle routes share: 200 shards of ~250,000 drawings (one for validation), training drawn
#: on the fly from the shards (the image cache of all 49.7M drawings would be ~600 GB), 800 steps of
#: 680 an epoch as the public kernels do, each epoch validated on 20,000 drawings, the whole validation
#: shard scored once at the end, evaluate and baseline on bounded samples of it.
_KAGGLE_RUN: dict[str, Any] = {
    "data": {"source": str(VIEW), "kind": "kaggle"},
    "shard": {"count": 200, "val_shards": [-1], "max_per_class": None},
    "render": {"train_cache": False, "max_per_shard": None, "train_shards": None},
    "train": {
        "batch_size": 680,
        "steps_per_epoch": 800,
        "epochs": 70,
        "val_rows": 20000,
        "early_stopping_patience": 4,
        "folds": 1,
        "seeds": 1,
    },
    "evaluate": {"max_rows": 50000},
    "baseline": {"val_max_rows": 5000},
}

#: The blend measured best on real drawings (docs/quality.md): the image CNN of ``ours`` and the stroke
#: model of ``ours-strokes``, each its own train stage, averaged by predict with fitted weights. A model's
#: recipe overrides the train section, so the run's batch is set again on the strokes model.
_BLEND = {"ours": {}, "strokes": {"recipe": "ours-strokes", "batch_size": _KAGGLE_RUN["train"]["batch_size"]}}
_GPU_RUN = merge(_KAGGLE_RUN, {"train": {"time_budget_s": None}, "shard": {"spill_dir": None}})
_NOTEBOOK_RUN = merge(_KAGGLE_RUN, {"train": {"time_budget_s": 36000}, "shard": {"spill_dir": "/tmp/doodle-spill"}})

ROUTES: dict[str, Route] = {
    r.name: r
    for r in (
        Route(
            "kaggle-gpu",
            "Kaggle's full data on one GPU box: the 'ours' recipe, 200 shards, 70 epochs of 800 x 680, no time limit",
            "ours",
            _GPU_RUN,
        ),
        Route(
            "kaggle-notebook",
            "Kaggle's full data in a Kaggle Notebook (12 h, 20 GB kept in /kaggle/working): as kaggle-gpu, training "
            "stopped at an epoch end within 10 h, the shard stage's spills and DVC's cache in /tmp",
            "ours",
            _NOTEBOOK_RUN,
            dvc_cache="/tmp/dvc-cache",
        ),
        Route(
            "kaggle-gpu-blend",
            "as kaggle-gpu, two models in their own stages (models: ours, the 'ours' CNN; strokes, the 'ours-strokes' "
            "1-D conv) blended by predict with weights fitted on validation: about twice the training",
            "ours",
            _GPU_RUN,
            models=_BLEND,
        ),
        Route(
            "kaggle-notebook-blend",
            "as kaggle-notebook, the two models of kaggle-gpu-blend sharing the 10 h budget (5 h each)",
            "ours",
            _NOTEBOOK_RUN,
            dvc_cache="/tmp/dvc-cache",
            models=_BLEND,
        ),
    )
}


def get(name: str) -> Route:
    if name not in ROUTES:
        raise RouteError(f"unknown route {name!r}; choose one of {', '.join(ROUTES)}")
    return ROUTES[name]


# --------------------------------------------------------------------------- the data
def is_competition_folder(path: Path) -> bool:
    return (path / TRAIN_DIR).is_dir() and (path / TEST_FILE).is_file()


def find_competition(input_root: Path = KAGGLE_INPUT) -> Path:
    """The competition's folder under Kaggle's input mount: the two known places first (newer
    notebooks mount competitions under ``competitions/``), then any folder two levels down that
    holds ``train_simplified/`` and ``test_simplified.csv``."""
    known = [input_root / "competitions" / COMPETITION, input_root / COMPETITION]
    for path in known:
        if is_competition_folder(path):
            return path
    if input_root.is_dir():
        for path in sorted([*input_root.glob("*"), *input_root.glob("*/*")]):
            if path.is_dir() and is_competition_folder(path):
                return path
    raise RouteError(
        f"no competition data under {input_root}: looked at {', '.join(map(str, known))} and the folders below "
        f"{input_root} for {TRAIN_DIR}/ and {TEST_FILE}. In a notebook, add the competition's data (Add Input); "
        "elsewhere pass --data DIR"
    )


def link_view(source: Path, view: Path = VIEW) -> dict:
    """Make ``view`` a folder of links to what the pipeline reads of ``source``: every
    ``train_simplified/*.csv``, ``test_simplified.csv`` and, when present, ``test_labels.csv``.
    Files are linked one by one (DVC hashes a linked file's content but does not look inside a
    linked folder). An earlier view is replaced; any other existing ``view`` is left alone and
    refused. Returns what was linked."""
    source = source.resolve()
    if not is_competition_folder(source):
        raise RouteError(f"{source} is not the competition's folder: it needs {TRAIN_DIR}/ and {TEST_FILE}")
    if view.exists() or view.is_symlink():
        if not (view / MARKER).is_file():
            raise RouteError(
                f"{view} exists and was not made by this command: move it away, or link elsewhere with --to"
            )
        shutil.rmtree(view)
    (view / TRAIN_DIR).mkdir(parents=True)
    files = sorted(p for p in (source / TRAIN_DIR).iterdir() if p.suffix == ".csv" and p.is_file())
    if not files:
        raise RouteError(f"no class files (*.csv) in {source / TRAIN_DIR}")
    for path in files:
        (view / TRAIN_DIR / path.name).symlink_to(path)
    linked = [TEST_FILE] + ([LABELS_FILE] if (source / LABELS_FILE).is_file() else [])
    for name in linked:
        (view / name).symlink_to(source / name)
    (view / MARKER).write_text(f"{source}\n")
    left_out = sorted(p.name for p in source.iterdir() if p.name not in {TRAIN_DIR, *linked})
    size = sum(p.stat().st_size for p in files) + sum((source / n).stat().st_size for n in linked)
    return {"source": source, "view": view, "class_files": len(files), "bytes": size, "left_out": left_out}


# --------------------------------------------------------------------------- params.yaml
def write_params(path: Path, overrides: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Merge ``overrides`` into the params file at ``path``, its comments and order kept, after
    checking the result as the pipeline's check stage does (a route never leaves a params.yaml
    the pipeline refuses). Returns the (key, old, new) of every value changed."""
    from ruamel.yaml import YAML

    from doodle.core.params import read_params
    from doodle.sections import check_all

    old = read_params(path)
    new = merge({k: v for k, v in old.items() if not (k in WHOLE and k in overrides)}, overrides)
    check_all(new)
    yaml = YAML()  # round trip: comments and layout stay
    doc = yaml.load(path.read_text())
    _merge_into(doc, overrides)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    path.write_text(buf.getvalue())
    before, after = flatten(old), flatten(new)
    return [(k, before.get(k), after[k]) for k in after if before.get(k) != after[k]]


def _merge_into(doc, overrides: dict[str, Any], top: bool = True) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict) and not (top and key in WHOLE):
            _merge_into(doc[key], value, top=False)
        else:
            doc[key] = copy.deepcopy(value)


# --------------------------------------------------------------------------- the command
def apply_route(route: Route, data: str, params: Path, input_root: Path = KAGGLE_INPUT, dvc: bool = True) -> None:
    source = find_competition(input_root) if data == "auto" else Path(data)
    linked = link_view(source)
    print(
        f"route {route.name}: linked {linked['class_files']} class files and {TEST_FILE} "
        f"({linked['bytes'] / 1e9:.1f} GB) from {linked['source']} into {linked['view']}/"
        + (f"; not linked (never hashed or read): {', '.join(linked['left_out'])}" if linked["left_out"] else "")
    )
    changed = write_params(params, route.params())
    print(f"route {route.name}: {len(changed)} value(s) of {params} set (recipe {route.recipe}):")
    for key, before, after in changed:
        print(f"  {key}: {before!r} -> {after!r}")
    if route.dvc_cache:
        command = ["dvc", "cache", "dir", "--local", route.dvc_cache]
        if dvc and shutil.which("dvc"):
            subprocess.run(command, check=True)
            print(f"route {route.name}: DVC's cache is now {route.dvc_cache} ({' '.join(command)})")
        else:
            print(f"route {route.name}: then run `{' '.join(command)}` (DVC's cache off the kept folder)")
    print(f"route {route.name}: now run `dvc repro`")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m doodle.routes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("route", nargs="?", help=f"one of {', '.join(ROUTES)}, or `link` (the data links only)")
    p.add_argument("source", nargs="?", help="with `link`: the competition's folder")
    p.add_argument("--list", action="store_true", help="the routes and what they set")
    p.add_argument("--data", default="auto", help="the competition's folder, or auto (Kaggle's mount)")
    p.add_argument("--to", type=Path, default=VIEW, help=f"with `link`: where the links go (default {VIEW})")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--input-root", type=Path, default=KAGGLE_INPUT, help="where --data auto looks")
    p.add_argument("--no-dvc", action="store_true", help="print the dvc command instead of running it")
    a = p.parse_args(argv)
    try:
        if a.list or not a.route:
            for r in ROUTES.values():
                print(f"{r.name}: {r.description}")
                for key, value in flatten(r.params()).items():
                    print(f"    {key}: {value!r}")
            return
        if a.route == "link":
            source = Path(a.source) if a.source else find_competition(a.input_root)
            linked = link_view(source, a.to)
            print(f"linked {linked['class_files']} class files from {linked['source']} into {linked['view']}/")
            return
        apply_route(get(a.route), a.data, a.params, a.input_root, dvc=not a.no_dvc)
    except UserError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
