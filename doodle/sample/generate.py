"""The ``sample`` stage's params and its one entry point: which embedded data set to write, and how big.

The two generators (:mod:`doodle.sample.doodles`, :mod:`doodle.sample.digits`) take plain
arguments and know nothing of params.yaml or of each other; this module is the only place that
reads ``sample.kind`` and chooses between them, so neither generator imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from doodle.core.params import require

from .digits import DIGITS, write_digits
from .doodles import SHAPES, write_doodles

KINDS = ("doodles", "digits")


@dataclass
class SampleParams:
    """params.yaml section ``sample``. ``kind`` picks the data set: ``doodles`` (Quick, Draw!
    layout, doodle.sample.doodles) or ``digits`` (Digit Recognizer layout, doodle.sample.digits)."""

    seed: int = 42
    classes: list[str] | None = None
    train_per_class: int = 1500
    test_per_class: int = 50
    corrupt_fraction: float = 0.002
    kind: str = "doodles"

    def validate(self, where: str = "sample") -> None:
        require(self.kind in KINDS, f"{where}.kind", f"{self.kind!r} is not one of {', '.join(KINDS)}")
        available = self.available()
        unknown = sorted(set(self.classes or []) - set(available))
        require(
            not unknown,
            f"{where}.classes",
            f"unknown {self.kind} class(es) {unknown}; available: {available}"
            + (" (as strings, e.g. ['3', '8'])" if self.kind == "digits" else ""),
        )
        require(
            self.train_per_class >= 1 and self.test_per_class >= 0,
            where,
            "train_per_class must be >= 1 and test_per_class >= 0",
        )
        require(0 <= self.corrupt_fraction < 0.5, f"{where}.corrupt_fraction", "must be in [0, 0.5)")

    def available(self) -> list[str]:
        return list(DIGITS) if self.kind == "digits" else sorted(SHAPES)

    def class_names(self) -> list[str]:
        return sorted(self.classes or self.available())


def generate(out_dir: str | Path, cfg: SampleParams, progress: Callable[[int], object] | None = None) -> dict:
    """Write the sample data set of ``cfg.kind`` under ``out_dir`` (replacing it); return counts
    (``classes``, ``train_rows``, ``corrupted_rows``, ``test_rows``). ``progress(n)`` is told of
    every ``n`` drawings made, ``(train_per_class + test_per_class) * classes`` in all."""
    sizes = {
        "seed": cfg.seed,
        "train_per_class": cfg.train_per_class,
        "test_per_class": cfg.test_per_class,
        "corrupt_fraction": cfg.corrupt_fraction,
        "progress": progress,
    }
    if cfg.kind == "digits":
        return write_digits(out_dir, [int(d) for d in cfg.class_names()], **sizes)
    return write_doodles(out_dir, cfg.class_names(), **sizes)
