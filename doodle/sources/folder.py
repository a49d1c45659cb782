"""Which layout an input folder holds (``data.source``, ``data.kind``): Kaggle's Quick Draw CSVs,
Google's ndjson files, a Kaggle Digit Recognizer folder or Google's numpy_bitmap files. The one
place a folder is recognised; the readers (:mod:`.quickdraw` for strokes, :mod:`.pixels` for
pixels) start from the :class:`Source` it returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from doodle.core.errors import UserError
from doodle.core.params import require

from .pixels import DIGIT_CLASSES

log = logging.getLogger(__name__)

#: The layouts a data.source folder can hold, each with what identifies it.
KINDS = {
    "kaggle": "a Kaggle Quick Draw folder (train_simplified/<word>.csv and test_simplified.csv)",
    "ndjson": "a folder of Google simplified <word>.ndjson files",
    "digits": "a Kaggle Digit Recognizer folder (train.csv, test.csv)",
    "numpy_bitmap": "a folder of Google numpy_bitmap <word>.npy files",
}
PIXEL_KINDS = ("digits", "numpy_bitmap")


class SourceError(UserError, ValueError):
    """The input cannot be used at all (wrong path, wrong layout, missing columns)."""


@dataclass
class DataParams:
    """params.yaml section ``data``: the input folder (see :func:`resolve_source`)."""

    source: str = "data/sample"
    kind: str = "auto"  # auto (detected) | kaggle | ndjson | digits | numpy_bitmap

    def validate(self, where: str = "data") -> None:
        kinds = ["auto", *KINDS]
        require(self.kind in kinds, f"{where}.kind", f"must be one of {', '.join(kinds)}, got {self.kind!r}")


@dataclass
class Source:
    """A resolved input folder: its layout and its class files, sorted by class name."""

    root: Path
    kind: str  # one of KINDS
    class_files: dict[str, Path]  # word -> file (none for digits: train.csv holds every class)
    skipped: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(DIGIT_CLASSES) if self.kind == "digits" else sorted(self.class_files)

    @property
    def pixels(self) -> bool:
        """Whether the drawings are images already (image shards), not strokes."""
        return self.kind in PIXEL_KINDS

    def input_files(self) -> list[Path]:
        """What the shard stage reads, in order: one file a class, or the digits' one train.csv."""
        return [self.root / "train.csv"] if self.kind == "digits" else [self.class_files[c] for c in self.classes]

    @property
    def test_file(self) -> Path | None:
        """The test set to predict, if the folder has one (numpy_bitmap folders never do)."""
        if self.kind == "numpy_bitmap":
            return None
        p = self.root / ("test.csv" if self.kind == "digits" else "test_simplified.csv")
        return p if p.is_file() else None

    @property
    def test_labels_file(self) -> Path | None:
        p = self.root / "test_labels.csv"
        return p if p.is_file() else None


def resolve_source(source: str | Path, kind: str = "auto", sample_dir: Path | None = None) -> Source:
    """Find which layout ``source`` holds (or check it holds ``kind``); fail naming the path and
    what was expected. A folder that matches several layouts needs ``data.kind``. ``sample_dir``:
    where the ``sample`` stage writes the embedded sample (the stages pass the project's), which
    ``data.source: sample`` names."""
    root = sample_dir if sample_dir is not None and str(source) == "sample" else Path(source)
    expected = " or ".join(KINDS.values()) if kind == "auto" else KINDS[kind]
    if not root.exists():
        raise SourceError(
            f"data.source: {root} does not exist; expected {expected}"
            + (" (run `dvc repro sample` to generate the embedded sample)" if root == sample_dir else "")
        )
    if not root.is_dir():
        raise SourceError(f"data.source: {root} is not a folder; expected {expected}")
    found = [
        k
        for k, present in (
            ("kaggle", (root / "train_simplified").is_dir()),
            ("digits", (root / "train.csv").is_file()),
            ("numpy_bitmap", any(root.glob("*.npy"))),
            ("ndjson", any(root.glob("*.ndjson"))),
        )
        if present
    ]
    if kind == "auto" and len(found) > 1:
        raise SourceError(f"data.source: {root} holds several layouts ({', '.join(found)}); set data.kind to one")
    if kind != "auto" and kind not in found:
        raise SourceError(f"data.source: {root} is not {expected} (data.kind: {kind})")
    if not found:
        raise SourceError(f"data.source: {root} holds neither layout; expected {expected}")
    kind = found[0] if kind == "auto" else kind
    if kind == "digits":
        return Source(root, kind, {})
    folder, suffix = {"kaggle": (root / "train_simplified", ".csv"), "ndjson": (root, ".ndjson")}.get(
        kind, (root, ".npy")
    )
    files, skipped = {}, []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix == suffix and not path.name.startswith("."):
            files[path.stem] = path
        elif kind == "kaggle" or path.suffix not in (".csv", ".md", ".txt"):
            skipped.append(path.name)
    for name in skipped:
        log.warning("skipping %s: not a %s class file", folder / name, suffix)
    if not files:
        raise SourceError(f"data.source: no class files (*{suffix}) in {folder}")
    return Source(root, kind, files, skipped)


def check_source_for_dvc(data: DataParams, sample_kind: str = "doodles", sample_dir: Path | None = None) -> str:
    """The layout of ``data.source`` as the ``check`` stage sees it, before the pipeline runs: the
    embedded sample's (``sample_dir``, written later by the ``sample`` stage) without looking, any other folder
    resolved (:func:`resolve_source`: a wrong path or layout is named). Refuses a linked folder
    inside it: DVC hashes a linked file's content but does not look inside a linked folder, so it
    would see no data and never notice a change. Returns the layout."""
    if sample_dir is not None and Path(data.source) in (sample_dir, Path("sample")):
        return "digits" if sample_kind == "digits" else "kaggle"
    source = resolve_source(data.source, data.kind, sample_dir)
    for path in sorted(source.root.iterdir()):
        if path.is_symlink() and path.is_dir():
            raise SourceError(
                f"data.source: {path} is a link to a folder, and DVC does not look inside linked folders (it "
                "would not see the data change): link the files instead, e.g. `python -m doodle.routes link "
                f"{path.resolve().parent} {source.root}`, or point data.source at the folder itself"
            )
    return source.kind


# --------------------------------------------------------------------------- raw blocks
