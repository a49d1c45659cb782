"""Model quality per training recipe: train each on a labelled data set within one time budget, score its test set.

    python -m benchmarks.quality [--data DIR] [--budget 600] [--recipes NAME ...] [--workdir DIR]
    python -m benchmarks.quality --print-params NAME   # the `dvc exp run -S ...` line that applies a recipe
    python -m benchmarks.quality --list                # the recipes and their sources

DIR is a folder in Kaggle's layout with answers: ``train_simplified/<word>.csv``, ``test_simplified.csv``
and ``test_labels.csv`` (default ``../shared/data/quickdraw-real15``: 15 classes x 400 real drawings and a
labelled test set of 750). The recipes are those of :mod:`doodle.recipes`.

Each recipe runs the project's own stages, as subprocesses (``python -m stages.X --quiet``, PYTHONPATH =
the repository), in a scratch project of its own under --workdir that holds only its params.yaml (the
repository's, the recipe's overrides, then the run's settings below) and what the stages write:
- ``shard`` once per distinct data + shard params, into ``WORKDIR/shards-<hash>``; every recipe's
  ``data/shards`` links there, so all train on the same shards and validate on the same shard (the last
  of --shards).
- ``render``, ``train``, ``predict``: the test file through the predict stage (balancing as params.yaml
  says), scored with ``test_labels.csv``.

Every recipe gets the same wall-clock budget for training (``train.time_budget_s``: training stops at
the epoch end after which the next epoch would overrun it), with ``train.epochs`` far beyond what fits
and early stopping off, so the budget ends every run; the best epoch by validation MAP@3 is kept, as
the train stage always does. An epoch is ``train.steps_per_epoch`` = --steps-per-epoch (default
budget / 30, at least 5) steps, the same for every recipe, so epochs stay short against the budget.

``--blend A B [C ...]``: after the recipes, the blend of A, B, ... as a user configures it, in a project
of its own (``blend-A+B``): params.yaml's ``models`` names one model per recipe (``{A: {recipe: A}, ...}``,
doodle.lineup), ``train.time_budget_s`` is the budget times the number of models (shared equally), and
the pipeline's own stages run: check, render, ``train --model`` each, predict (``predict.weights: fit``:
weights chosen on the validation shard, doodle.predict.blend). Its row gives the blend's validation MAP@3
(the fitted weights' score), its test MAP@3, the weights and each model's validation MAP@3 alone.
``--recipes`` with no name runs the blend only.

Prints a table (recipe, validation and test MAP@3, training seconds, epochs, images/s), a diagnosis for
a reference recipe below 0.70 test MAP@3, and as its last line one JSON object:
``{"recipes": {NAME: {"test_map3", "val_map3", "train_s", "epochs", ...}}, "ours_map3", "best_reference_map3",
...}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import REPO, last_line
from doodle import recipes
from doodle.core.params import ParamError, read_params
from doodle.sections import check_all, load_all
from stages.cli import subprocess_env

DEFAULT_DATA = REPO.parent / "shared" / "data" / "quickdraw-real15"
CREDIBLE = 0.70  # a reference below this test MAP@3 is not a credible bar to beat
HUGE = 1_000_000  # epochs and early-stopping patience: the time budget ends training


def run_settings(data: Path, budget: int, steps_per_epoch: int, shards: int) -> dict:
    """The params every recipe runs with: the data, its shards and the run length (no recipe sets them)."""
    return {
        "data": {"source": str(data)},
        "shard": {"count": shards, "val_shards": [-1]},
        "train": {
            "epochs": HUGE,
            "steps_per_epoch": steps_per_epoch,
            "time_budget_s": budget,
            "early_stopping_patience": HUGE,
        },
    }


def recipe_params(recipe: recipes.Recipe, base: dict, settings: dict) -> dict:
    clash = sorted(set(recipe.flat()) & set(recipes.flatten(settings)))
    if clash or recipes.run_keys_set(recipe):
        raise SystemExit(f"recipe {recipe.name} sets what the benchmark fixes: {clash or recipes.run_keys_set(recipe)}")
    params = recipes.merge(recipes.apply(recipe, base), settings)
    load_all(params)  # a bad recipe fails here, before any training
    return params


def stage(name: str, project: Path, args: list[str] = ()) -> tuple[bool, float]:
    """Run ``python -m stages.<name> --quiet ARGS`` in ``project``; its output goes to
    ``logs/<name>[-<last arg>].log``."""
    log = project / "logs" / f"{'-'.join([name, *args[1:]])}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        command = [sys.executable, "-m", f"stages.{name}", "--quiet", *args]
        rc = subprocess.run(command, cwd=project, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if rc:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        print(f"  {name} failed (exit {rc}) in {project}; the end of {log}:\n{tail}", flush=True)
    return rc == 0, seconds


def write_params(folder: Path, params: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def shard_once(params: dict, work: Path, done: dict) -> Path | None:
    """The shards for ``params``' data and shard sections, made once per distinct pair in this run."""
    key = json.dumps({"data": params["data"], "shard": params["shard"]}, sort_keys=True)
    if key not in done:
        folder = work / f"shards-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        shutil.rmtree(folder, ignore_errors=True)
        write_params(folder, {"data": params["data"], "shard": params["shard"]})
        ok, seconds = stage("shard", folder)
        print(f"shard: {folder} in {seconds:.1f}s", flush=True)
        done[key] = folder / "data" / "shards" if ok else None
    return done[key]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_recipe(recipe: recipes.Recipe, params: dict, work: Path, shards_done: dict) -> dict:
    """Shard (shared), render, train and predict one recipe; its numbers, log findings and stage seconds."""
    project = work / recipe.name
    shutil.rmtree(project, ignore_errors=True)  # a fresh run: no backup to resume, no stale outputs
    write_params(project, params)
    shards = shard_once(params, work, shards_done)
    out = {"recipe": recipe.name, "ok": False, "stage_s": {}}
    if shards is None:
        return out
    (project / "data").mkdir()
    (project / "data" / "shards").symlink_to(shards, target_is_directory=True)
    for name in ("render", "train", "predict"):
        ok, seconds = stage(name, project)
        out["stage_s"][name] = round(seconds, 1)
        if not ok:
            return out
    train = read_json(project / "reports" / "train" / "main.json")
    meta = read_json(project / "models" / "main" / "model.json")
    log = (project / "logs" / "train.log").read_text()
    rows = re.search(r"([\d,]+) classes, ([\d,]+) train (?:images|drawings)", log)
    out.update(
        ok=True,
        val_map3=round(train["val_map_at_3"], 4),
        test_map3=round(read_json(project / "reports" / "test.json")["test_map_at_3"], 4),
        train_s=train.get("time_budget_used_s") or train["seconds"],  # start of training to the last epoch's end
        fit_s=train["seconds"],  # all of model.fit, its teardown included
        epochs=train["epochs_run"],
        images_per_s=train["images_per_s"],
        stopped_by_budget=train.get("stopped_by_time_budget", False),
        classes=int(rows.group(1).replace(",", "")) if rows else None,
        train_rows=int(rows.group(2).replace(",", "")) if rows else None,
        history=meta.get("history", {}),
        near_chance_warnings=log.count("is near chance"),
        budget_overrun_warnings=log.count("WARNING time budget"),
    )
    return out


def blend_params(names: list[str], base: dict, settings: dict, budget: int) -> dict:
    """The blend of the recipes ``names`` as one project's params, as a user writes them: the ``models``
    section naming one model per recipe (``{name: {recipe: name}}``, doodle.lineup), the render section
    of its first recipe that has one (an image recipe that draws otherwise draws its own images, on the
    fly), and ``train.time_budget_s`` the recipes' budgets together, shared equally."""
    params = recipes.merge(base, settings)
    params["models"] = {n: {"recipe": n} for n in names}
    drawn = [recipes.get(n).overrides["render"] for n in names if "render" in recipes.get(n).overrides]
    params = recipes.merge(params, {"render": drawn[0] if drawn else {}})
    params["train"]["time_budget_s"] = budget * len(names)
    check_all(params)  # a bad blend fails here, before any training
    return params


def run_blend(names: list[str], params: dict, work: Path, shards_done: dict) -> dict:
    """The blend of the recipes ``names`` through the pipeline's own path, in ``WORKDIR/blend-A+B``: the
    check stage, render, one train stage per model (``--model NAME``), predict with ``predict.weights:
    fit``; the row of the table for it."""
    name = "blend-" + "+".join(names)
    project = work / name
    shutil.rmtree(project, ignore_errors=True)
    write_params(project, params)
    out = {"recipe": name, "ok": False, "stage_s": {}}
    shards = shard_once(params, work, shards_done)
    if shards is None:
        return out
    (project / "data").mkdir()
    (project / "data" / "shards").symlink_to(shards, target_is_directory=True)
    runs = [("check", []), ("render", []), *(("train", ["--model", n]) for n in names), ("predict", [])]
    for stage_name, args in runs:
        ok, seconds = stage(stage_name, project, args)
        out["stage_s"][" ".join([stage_name, *args[1:]])] = round(seconds, 1)
        if not ok:
            return out
    blend = read_json(project / "reports" / "blend.json")
    trained = [read_json(project / "reports" / "train" / f"{n}.json") for n in names]
    out.update(
        ok=True,
        val_map3=blend["val_map_at_3_blend"],
        test_map3=round(read_json(project / "reports" / "test.json")["test_map_at_3"], 4),
        weights={m["name"]: m["weight"] for m in blend["models"]},
        val_map3_alone={m["name"]: m["val_map_at_3"] for m in blend["models"]},
        train_s=round(sum(t.get("time_budget_used_s") or t["seconds"] for t in trained), 1),
    )
    return out


def diagnose(r: dict, params: dict) -> list[str]:
    """Why a recipe scored low, as far as its log and history tell."""
    why = []
    h = r.get("history", {})
    t = params["train"]
    loss, chance = h.get("loss", []), math.log(max(r.get("classes") or 2, 2))
    if loss and (not all(map(math.isfinite, loss)) or min(loss) > 1.5 * chance):
        why.append(
            f"training diverged: its loss never went below {1.5 * chance:.2f}, 1.5x the loss of guessing uniformly "
            f"(last {loss[-1]:.2f}): learning rate {t['learning_rate']} too high for this model at batch "
            f"{t['batch_size']}?"
        )
    if r.get("near_chance_warnings"):
        why.append(
            f"{r['near_chance_warnings']} near-chance validation warning(s) in its train log: the inference-mode "
            "model disagrees with training (BatchNorm statistics, or validation drawn unlike training)"
        )
    images = r["epochs"] * t["steps_per_epoch"] * t["batch_size"]
    rows = r.get("train_rows")
    passes = f" = {images / rows:.1f} passes over its {rows:,} drawings" if rows else ""
    why.append(
        f"the budget allowed {r['epochs']} epochs, {r['epochs'] * t['steps_per_epoch']} steps, {images:,} images"
        f"{passes} at {r['images_per_s']:.0f} img/s on this machine"
    )
    val = h.get("val_map_at_3", [])
    if len(val) >= 2 and max(range(len(val)), key=val.__getitem__) >= len(val) - 2:
        why.append(
            f"validation MAP@3 was still rising when the budget ended ({val[-2]:.3f} -> {val[-1]:.3f}): undertrained"
        )
    acc, val_acc = h.get("accuracy", []), h.get("val_accuracy", [])
    if acc and val_acc and acc[-1] - val_acc[-1] > 0.25:
        why.append(f"overfitting: training accuracy {acc[-1]:.3f} against validation {val_acc[-1]:.3f}")
    return why


def table(results: list[dict]) -> str:
    head = f"{'recipe':<24} {'val MAP@3':>9} {'test MAP@3':>10} {'train s':>8} {'fit s':>6} {'epochs':>6} {'img/s':>6}"
    head += "  stop"
    lines = [head, "-" * len(head)]
    for r in results:
        if not r["ok"]:
            lines.append(f"{r['recipe']:<24} {'failed':>9}")
            continue
        if "weights" in r:  # a blend: its models' training together
            weights = ", ".join(f"{w:.2f}" for w in r["weights"].values())
            scores = f"{r['recipe']:<24} {r['val_map3']:>9.4f} {r['test_map3']:>10.4f}"
            lines.append(f"{scores} {r['train_s']:>8.0f}  weights {weights}")
            continue
        stop = "budget" if r["stopped_by_budget"] else "epochs"
        lines.append(
            f"{r['recipe']:<24} {r['val_map3']:>9.4f} {r['test_map3']:>10.4f} {r['train_s']:>8.0f} {r['fit_s']:>6.0f} "
            f"{r['epochs']:>6} "
            f"{r['images_per_s']:>6.0f}  {stop}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Kaggle-layout folder with test_labels.csv")
    p.add_argument("--budget", type=int, default=600, help="training seconds per recipe (default 600)")
    names = list(recipes.RECIPES)  # choices: a wrong name is one usage line, not a traceback
    p.add_argument(
        "--recipes", nargs="*", default=names, choices=names, metavar="NAME", help="default: all; none: the blend only"
    )
    p.add_argument("--workdir", default="/tmp/doodle-bench-quality", help="scratch projects, one per recipe")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="default: budget / 30, at least 5")
    p.add_argument("--shards", type=int, default=6, help="shard.count; the last shard validates (default 6)")
    p.add_argument(
        "--print-params", choices=names, metavar="NAME", help="print the `dvc exp run -S ...` line of a recipe"
    )
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument(
        "--blend", nargs="+", choices=names, metavar="NAME", help="also train these recipes as one blend (`models`)"
    )
    a = p.parse_args(argv)
    if a.print_params:
        print(recipes.get(a.print_params).dvc_command())
        return
    if a.list:
        for r in recipes.RECIPES.values():
            print(f"{r.name}: {r.description}")
        return
    chosen = [recipes.get(n) for n in dict.fromkeys(a.recipes)]
    data = Path(a.data).resolve()
    for need in ("train_simplified", "test_simplified.csv", "test_labels.csv"):
        if not (data / need).exists():
            raise SystemExit(f"error: {data / need} not found: --data needs Kaggle's layout and test_labels.csv")
    spe = a.steps_per_epoch or max(5, a.budget // 30)
    settings = run_settings(data, a.budget, spe, a.shards)
    base = read_params(REPO / "params.yaml")
    all_params = {r.name: recipe_params(r, base, settings) for r in chosen}
    try:  # a blend whose recipes cannot share one render section stops here, before any training
        blend = blend_params(a.blend, base, settings, a.budget) if a.blend else None
    except ParamError as exc:
        raise SystemExit(f"error: --blend {' '.join(a.blend)}: {exc}") from None
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"quality: {len(chosen)} recipe(s) on {data}, {a.budget}s training each, {spe} steps an epoch, "
        f"{a.shards} shards (the last validates); scratch projects in {work}",
        flush=True,
    )

    t0 = time.perf_counter()
    results, shards_done = [], {}
    for r in chosen:
        print(f"{r.name}: {r.description}", flush=True)
        res = run_recipe(r, all_params[r.name], work, shards_done)
        results.append(res)
        if res["ok"]:
            print(
                f"  val MAP@3 {res['val_map3']:.4f}, test MAP@3 {res['test_map3']:.4f}; {res['epochs']} epochs, "
                f"{res['train_s']:.0f}s training; stages {res['stage_s']}",
                flush=True,
            )
    if a.blend:
        print(f"blend of {', '.join(a.blend)}: one project, one model each, {a.budget}s each", flush=True)
        results.append(run_blend(a.blend, blend, work, shards_done))
    wall = time.perf_counter() - t0
    summarize(results, all_params, work, wall, a.budget, spe)


def summarize(results: list[dict], all_params: dict, work: Path, wall: float, budget: int, spe: int) -> None:
    """The table, a diagnosis of each low reference, and the JSON last line."""
    print()
    print(table(results))
    for r in results:
        if not r["ok"]:
            print(f"\n{r['recipe']} failed: see its logs in {work / r['recipe'] / 'logs'}")
            continue
        if r["recipe"] in recipes.RECIPES and recipes.RECIPES[r["recipe"]].reference and r["test_map3"] < CREDIBLE:
            print(f"\n{r['recipe']} is below {CREDIBLE:.2f} test MAP@3, not a credible reference yet. Likely why:")
            for line in diagnose(r, all_params[r["recipe"]]):
                print(f"  - {line}")
        if r.get("budget_overrun_warnings"):
            print(f"\n{r['recipe']}: an epoch ended past the budget; lower --steps-per-epoch")
    print(f"\ntotal wall time {wall:.0f}s ({wall / 60:.1f} min), budget {budget}s a recipe")

    ok = {r["recipe"]: r for r in results if r["ok"]}
    refs = [r["test_map3"] for n, r in ok.items() if n in recipes.RECIPES and recipes.RECIPES[n].reference]
    keys = ("test_map3", "val_map3", "train_s", "fit_s", "epochs", "images_per_s", "stopped_by_budget")
    keys += ("weights", "val_map3_alone")  # a blend's
    last_line(
        {
            "recipes": {n: {k: r[k] for k in keys if k in r} for n, r in ok.items()},
            "ours_map3": ok["ours"]["test_map3"] if "ours" in ok else None,
            "best_reference_map3": max(refs) if refs else None,
            "budget_s": budget,
            "steps_per_epoch": spe,
            "wall_s": round(wall, 1),
            "failed": [r["recipe"] for r in results if not r["ok"]],
        }
    )


if __name__ == "__main__":
    main()
