"""Full-size rehearsal: the documented Kaggle route, through `dvc repro`, on Kaggle's layout at any scale.

    python -m benchmarks.kaggle_scale --scale 0.01 [--route kaggle-notebook] [--budget 120]
                                      [--workdir /tmp/doodle-kaggle-scale] [--data DIR] [--keep-data]

What a new user does, measured: (1) the competition's folder at ``--scale`` (1.0: 340 class files,
49.7M drawings, ~24.7 GB, plus raw stand-ins; benchmarks.kaggle_folder, written once and reused),
outside the project; (2) a fresh clone of this project (the working tree's code) with DVC's cache in
a folder of its own; (3) ``python -m doodle.routes ROUTE --data DIR``, then only
``train.time_budget_s`` set for the rehearsal; (4) every stage of dvc.yaml with
``dvc repro --single-item STAGE``, in order.

Per stage: wall time (DVC included), the stage's own command's time (the rest is DVC: hashing deps,
caching outputs), the peak memory of the whole process tree (sum of PSS), the peak and final bytes
in the project folder (what /kaggle/working would hold), in the shard stage's spill folder and in
DVC's cache. DVC's own costs: the first hash of the source as the route links it (only the files the
shard stage reads) against the whole mount (train_raw/ included), each in a fresh DVC project, and a
no-op ``dvc status`` and ``dvc repro`` at the end. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import TreeMemory, clone_working_tree, last_line
from stages.cli import subprocess_env

GB = 1e9


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed), 0 if it does not exist."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    return total


class Watch(TreeMemory):
    """:class:`benchmarks.common.TreeMemory` of a command's process tree, plus at each sample the
    bytes of each of ``folders`` (their peaks) and the first and last time a process whose command
    line holds ``marker`` ran (the stage's own command, as opposed to DVC around it)."""

    def __init__(self, pid: int, folders: dict[str, Path], marker: str, interval: float = 0.5):
        super().__init__(pid, interval)
        self.folders, self.marker = folders, marker
        self.peak: dict[str, int] = {}
        self.marker_seen: list[float] = []

    def sample(self, pids: list[int]) -> None:
        super().sample(pids)
        marked = False
        for pid in pids:
            with contextlib.suppress(OSError):
                marked |= self.marker in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        if marked:
            now = time.perf_counter()
            self.marker_seen = [self.marker_seen[0] if self.marker_seen else now, now]
        for name, path in self.folders.items():
            self.peak[name] = max(self.peak.get(name, 0), folder_bytes(path))


def dvc(args: list[str], cwd: Path, log: Path | None = None, folders: dict | None = None, marker: str = "") -> dict:
    """Run ``dvc ARGS`` in ``cwd`` (output to ``log``), watched; its figures. Fails loudly."""
    t0 = time.perf_counter()
    out = log.open("a") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=cwd, env=subprocess_env(), stdout=out, stderr=out)
    with Watch(proc.pid, folders or {}, marker or "\0") as watch:
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if log:
        out.close()
    if rc:
        tail = log.read_text()[-3000:] if log else ""
        raise SystemExit(f"dvc {' '.join(args)} failed (exit {rc}) in {cwd}:\n{tail}")
    seen = watch.marker_seen
    return {
        "wall_s": wall,
        "cmd_s": (seen[1] - seen[0]) if seen else 0.0,
        "peak_pss": watch.peak_pss_mb * 2**20,
        "peak": watch.peak,
    }


def first_hash(folder: Path, work: Path, name: str) -> dict:
    """DVC's first hash of ``folder``: a fresh git + DVC project whose one stage depends on it."""
    proj = work / f"hash-{name}"
    shutil.rmtree(proj, ignore_errors=True)
    proj.mkdir(parents=True)
    env = subprocess_env()
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=proj, check=True, env=env)
    stage = {"stages": {"hash": {"cmd": "true", "deps": [str(folder)]}}}
    (proj / "dvc.yaml").write_text(yaml.safe_dump(stage))
    result = dvc(["repro", "-q"], proj)
    dep = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]["hash"]["deps"][0]
    shutil.rmtree(proj, ignore_errors=True)
    return {"seconds": result["wall_s"], "bytes": int(dep.get("size", 0)), "files": int(dep.get("nfiles", 0))}


# what reports/train/<model>.json says of each model's training time: the fit, the budget, and the after-training work
AFTER_TRAINING = ("seconds", "images_per_s", "stopped_by_time_budget", "time_budget_used_s", "final_val_seconds")

SHARD_FIGURES = ("rows_out", "rows_per_s", "seconds", "read_seconds", "shuffle_write_seconds", "spill_bytes")


def stage_names(project: Path) -> list[str]:
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def prepare(a, work: Path) -> tuple[Path, Path, Path, Path, dict | None]:
    """The data (written unless there), and a fresh clone with the route applied, DVC's cache in a
    folder of its own and only ``train.time_budget_s`` changed. Returns (data, project, cache, spill
    folder, what was written)."""
    from benchmarks.kaggle_folder import write_kaggle_folder
    from doodle.routes import get, write_params

    data = Path(a.data).resolve() if a.data else work / f"data-{a.scale:g}"
    made = None
    if not (data / "train_simplified").is_dir():
        made = write_kaggle_folder(data, a.scale, seed=0, progress=True)
        size = made["train_bytes"] / GB
        print(f"data: wrote {made['train_rows']:,} train rows ({size:.1f} GB) in {made['seconds']:.0f}s")
    project, cache = work / f"project-{a.scale:g}", work / f"dvc-cache-{a.scale:g}"
    for path in (project, cache):
        shutil.rmtree(path, ignore_errors=True)
    clone_working_tree(project)
    env = subprocess_env()
    route = get(a.route)
    spill = Path(route.run.get("shard", {}).get("spill_dir") or project / "data" / "shards" / "_spill")
    routes = [sys.executable, "-m", "doodle.routes", a.route, "--data", str(data), "--no-dvc"]
    subprocess.run(routes, cwd=project, env=env, check=True)
    cache_dir = [sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache)]
    subprocess.run(cache_dir, cwd=project, env=env, check=True)
    write_params(project / "params.yaml", {"train": {"time_budget_s": a.budget}})  # the rehearsal's one change
    return data, project, cache, spill, made


def run_stages(project: Path, folders: dict[str, Path], log: Path) -> list[dict]:
    """Every stage of dvc.yaml in order, one ``dvc repro --single-item`` each: a row of figures each."""
    rows = []
    for name in stage_names(project):
        before = {k: folder_bytes(p) for k, p in folders.items()}
        r = dvc(["repro", "--single-item", name], project, log, folders, f"stages.{name}")
        after = {k: folder_bytes(p) for k, p in folders.items()}
        rows.append(
            {
                "stage": name,
                "wall_s": round(r["wall_s"], 1),
                "cmd_s": round(r["cmd_s"], 1),
                "dvc_s": round(max(r["wall_s"] - r["cmd_s"], 0.0), 1),
                "peak_mem_gb": round(r["peak_pss"] / GB, 2),
                **{f"peak_{k}_gb": round(r["peak"].get(k, 0) / GB, 2) for k in folders},
                **{f"added_{k}_gb": round((after[k] - before[k]) / GB, 2) for k in folders},
            }
        )
        print(table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def reports(project: Path) -> dict:
    """The headline metrics, and what reports/ says of each model's training time and of sharding's
    (the models the route's params name: a blend trains several, each its own train@<name>)."""
    metrics = {}
    models = list(yaml.safe_load((project / "params.yaml").read_text())["models"])
    per_model = [project / "metrics" / "train" / f"{n}.json" for n in models]
    files = [*sorted((project / "metrics").glob("*.json")), *per_model]
    for f in files:
        stem = f"train.{f.stem}" if f.parent.name == "train" else f.stem
        metrics.update({f"{stem}.{k}": v for k, v in json.loads(f.read_text()).items()})
    train = {n: json.loads((project / "reports" / "train" / f"{n}.json").read_text()) for n in models}
    shard = json.loads((project / "reports" / "shard.json").read_text())
    return {
        "metrics": metrics,
        "train": {n: {k: t.get(k) for k in AFTER_TRAINING} for n, t in train.items()},
        "shard": {k: shard.get(k) for k in SHARD_FIGURES},
    }


def rehearse(a) -> dict:
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, project, cache, spill, made = prepare(a, work)
    folders = {"project": project, "spill": spill, "cache": cache}
    log = work / f"dvc-{a.scale:g}.log"
    log.write_text("")
    total0 = time.perf_counter()
    rows = run_stages(project, folders, log)
    total = time.perf_counter() - total0
    status = dvc(["status"], project)["wall_s"]
    noop = dvc(["repro"], project)["wall_s"]
    hashes = {"view": first_hash(project / "data" / "raw", work, "view"), "mount": first_hash(data, work, "mount")}
    result = {
        "scale": a.scale,
        "route": a.route,
        "budget_s": a.budget,
        "data": str(data),
        "data_written": made,
        "stages": rows,
        "total_s": round(total, 1),
        "peak_mem_gb": max(r["peak_mem_gb"] for r in rows),
        "peak_project_gb": max(r["peak_project_gb"] for r in rows),
        "final_project_gb": round(folder_bytes(project) / GB, 2),
        "final_cache_gb": round(folder_bytes(cache) / GB, 2),
        "noop_status_s": round(status, 2),
        "noop_repro_s": round(noop, 2),
        "first_hash": hashes,
        **reports(project),
    }
    if not a.keep_data and a.data is None:
        shutil.rmtree(data, ignore_errors=True)
    if not a.keep_project:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return result


COLUMNS = [
    ("stage", "stage", "{}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("cmd_s", "stage s", "{:.1f}"),
    ("dvc_s", "DVC s", "{:.1f}"),
    ("peak_mem_gb", "peak mem GB", "{:.2f}"),
    ("peak_project_gb", "peak project GB", "{:.2f}"),
    ("peak_spill_gb", "peak spill GB", "{:.2f}"),
    ("added_project_gb", "+project GB", "{:+.2f}"),
    ("added_cache_gb", "+DVC cache GB", "{:+.2f}"),
]


def table(rows: list[dict], header: bool = True) -> str:
    widths = [max(len(title), 9) for _, title, _ in COLUMNS]
    lines = ["  ".join(t.rjust(w) for (_, t, _), w in zip(COLUMNS, widths))] if header else []
    for r in rows:
        lines.append("  ".join(fmt.format(r[k]).rjust(w) for (k, _, fmt), w in zip(COLUMNS, widths)))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, required=True, help="1.0 = Kaggle's 49.7M drawings (~24.7 GB)")
    p.add_argument("--route", default="kaggle-notebook", help="a doodle.routes route")
    p.add_argument("--budget", type=int, default=120, help="train.time_budget_s, the rehearsal's one param")
    p.add_argument("--workdir", default="/tmp/doodle-kaggle-scale")
    p.add_argument("--data", help="an existing competition folder (default: written under --workdir)")
    p.add_argument("--keep-data", action="store_true", help="keep the written data for the next run")
    p.add_argument("--keep-project", action="store_true", help="keep the scratch project and its DVC cache")
    a = p.parse_args(argv)
    r = rehearse(a)
    h = r["first_hash"]
    print(
        f"\nscale {r['scale']:g}, route {r['route']}: {r['total_s']:.0f}s for every stage, peak memory "
        f"{r['peak_mem_gb']:.2f} GB, project peak {r['peak_project_gb']:.2f} GB (final {r['final_project_gb']:.2f}), "
        f"DVC cache {r['final_cache_gb']:.2f} GB; no-op dvc status {r['noop_status_s']:.2f}s, dvc repro "
        f"{r['noop_repro_s']:.2f}s; first hash of the linked source {h['view']['seconds']:.1f}s "
        f"({h['view']['bytes'] / GB:.2f} GB, {h['view']['files']} files) vs the whole mount "
        f"{h['mount']['seconds']:.1f}s ({h['mount']['bytes'] / GB:.2f} GB, {h['mount']['files']} files); "
        f"train: {r['train']}; shard: {r['shard']}"
    )
    last_line(r)


if __name__ == "__main__":
    main()
