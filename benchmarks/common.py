"""Helpers for the benchmarks: real drawings (or the sample's), replicated to any size."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KAGGLE = REPO.parent / "shared" / "data" / "quickdraw-kaggle"
SAMPLE = REPO / "data" / "sample"

csv.field_size_limit(sys.maxsize)


def source_folder() -> Path:
    """The real Kaggle sample when present, else the embedded sample (generated if needed)."""
    if KAGGLE.is_dir():
        return KAGGLE
    if not (SAMPLE / "train_simplified").is_dir():
        from doodle.sample.generate import SampleParams, generate

        generate(SAMPLE, SampleParams())
    return SAMPLE


def real_rows(folder: Path | None = None) -> dict[str, list[list[str]]]:
    """{word: [row, ...]} of a Kaggle-layout folder's train CSVs."""
    folder = folder or source_folder()
    out = {}
    for f in sorted((folder / "train_simplified").glob("*.csv")):
        with f.open(newline="") as fh:
            r = csv.reader(fh)
            next(r)
            out[f.stem] = list(r)
    return out


def replicate_kaggle(out: Path, rows: int, classes: int | None = None) -> Path:
    """Write a Kaggle-layout train_simplified/ of ``rows`` rows by repeating real rows with new key_ids."""
    src = real_rows()
    words = sorted(src)[: classes or len(src)]
    per = -(-rows // len(words))
    (out / "train_simplified").mkdir(parents=True, exist_ok=True)
    key = 7_000_000_000_000_000
    written = 0
    for w in words:
        base = src[w]
        n = min(per, rows - written)
        with (out / "train_simplified" / f"{w}.csv").open("w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["countrycode", "drawing", "key_id", "recognized", "timestamp", "word"])
            for i in range(n):
                r = base[i % len(base)]
                wr.writerow([r[0], r[1], key, r[3], r[4], r[5]])
                key += 1
        written += n
    return out


def replicate_test(out: Path, rows: int) -> Path:
    """A test_simplified.csv of ``rows`` rows from real test (or train) drawings."""
    folder = source_folder()
    with (folder / "test_simplified.csv").open(newline="") as fh:
        r = csv.reader(fh)
        next(r)
        base = [(row[1], row[2]) for row in r]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["key_id", "countrycode", "drawing"])
        for i in range(rows):
            cc, d = base[i % len(base)]
            wr.writerow([8_000_000_000_000_000 + i, cc, d])
    return out


def clone_working_tree(dest: Path) -> Path:
    """A git clone of the project at ``dest`` with the working tree's code, pipeline and params
    (committed or not), for runs of ``dvc`` as users make them (tests and benchmarks alike)."""
    import shutil
    import subprocess

    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    for path in ["dvc.yaml", "params.yaml", "stages", "doodle", "benchmarks", ".dvc/config", "requirements.txt"]:
        src = REPO / path
        if src.is_dir():
            shutil.rmtree(dest / path, ignore_errors=True)
            shutil.copytree(src, dest / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / path)
    return dest


def last_line(obj: dict) -> None:
    print(json.dumps(obj))


class TreeMemory:
    """Peak memory of a process and all its descendants, sampled together every ``interval`` s.

    ``ru_maxrss`` sees one process at a time; a stage with worker processes needs the sum at
    each moment. RSS counts pages shared after fork once per process, so PSS (each shared page
    split between its sharers) is the honest sum; both are kept."""

    def __init__(self, pid: int, interval: float = 0.05):
        import threading

        self.pid, self.interval = pid, interval
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in children.read_text().split()]
        return pids

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample(self._tree())
            self._stop.wait(self.interval)

    def sample(self, pids: list[int]) -> None:
        """One sample of the processes ``pids`` (subclasses add what else they watch)."""
        rss = pss = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                pass
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 1024)
        self.peak_pss_mb = max(self.peak_pss_mb, pss / 1024)
