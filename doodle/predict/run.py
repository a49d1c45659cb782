"""The predict stage's run: the models to average, the test file streamed through them, the
submission written and checked, and the figures reports/test.json holds.

A Quick Draw source gets Kaggle's ``key_id,word`` top-3 file and the top-k probabilities (parquet,
for blending), scored for MAP@3 when the source has answers (the embedded sample's
test_labels.csv). A Digit Recognizer source gets ``ImageId,Label`` (test.csv read in order: ImageId
is the row number), scored for accuracy and MAP@3 when a test_labels.csv is present. A source
without a test set has nothing to submit (:func:`no_test_set`).

Several models (params.yaml's ``models``, or the files ``predict.models`` lists), of one input kind
or mixed (image CNNs and stroke-sequence models), are averaged with ``predict.weights``: fitted on
the validation shards (``fit``, :mod:`doodle.predict.blend`), equal (null) or as given; each
model's ensemble members count as one model (:mod:`doodle.predict.members`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from doodle.core.params import ParamError, require
from doodle.core.report import StageResult
from doodle.sources.folder import Source
from doodle.sources.pixels import DIGIT_CLASSES

from .inference import Timing, TrainedModel, predict_digit_file, predict_test_file
from .members import (
    blend_record,
    blend_weights,
    file_weights,
    flat,
    load_groups,
    resolve_groups,
    write_blend_record,
)
from .submission import (
    balance,
    score_digits,
    score_submission,
    top3,
    validate_digit_submission,
    validate_submission,
    write_digit_submission,
    write_submission,
    write_top_k,
)

log = logging.getLogger("doodle.predict")


@dataclass(frozen=True)
class PredictFiles:
    """Where predict reads and writes; the stage passes the project's (doodle.core.paths), so the
    library never assumes a working directory."""

    shards: Path  # the validation shards, for predict.weights: fit
    models: Path  # models/: models/<name>/ for each of ``names`` (predict.models: auto)
    names: list[str]  # the models params.yaml's ``models`` names
    submission: Path
    probabilities: Path  # the top-k probabilities, for blending
    blend: Path  # reports/blend.json: the models averaged and their weights, for evaluate


@dataclass
class PredictParams:
    """params.yaml section ``predict``."""

    models: str | list[str] = "auto"  # auto (doodle.predict.members.resolve_groups) or a list of model files
    batch_size: int = 512
    tta_flip: bool = False
    balance: str | bool = "auto"  # auto | on | off (YAML reads on/off as true/false: both work)
    top_k_saved: int = 10
    block_mb: int = 4
    weights: str | list[float] | None = "fit"  # fit (on validation) | null = equal | a list, one per model
    fit_rows: int = 20000  # predict.weights: fit scores the first N validation drawings

    def validate(self, where: str = "predict") -> None:
        if isinstance(self.weights, str):
            require(self.weights == "fit", f"{where}.weights", f"must be null, fit or a list, got {self.weights!r}")
        elif self.weights is not None:
            ok = isinstance(self.weights, list) and all(isinstance(w, (int, float)) and w >= 0 for w in self.weights)
            require(ok and sum(self.weights) > 0, f"{where}.weights", "a list needs numbers >= 0, not all 0")
        require(self.fit_rows >= 1, f"{where}.fit_rows", "must be >= 1")
        if isinstance(self.models, str):
            require(self.models == "auto", f"{where}.models", f"must be auto or a list of models, got {self.models!r}")
        require(bool(self.models), f"{where}.models", "name at least one model")
        if isinstance(self.balance, bool):
            self.balance = "on" if self.balance else "off"
        self.balance = {"true": "on", "false": "off"}.get(str(self.balance).lower(), str(self.balance).lower())
        require(
            self.balance in ("auto", "on", "off"), f"{where}.balance", f"must be auto, on or off, got {self.balance}"
        )
        for m in [] if self.models == "auto" else self.models:
            require(
                Path(m).parts[:1] == ("models",) and ".." not in Path(m).parts,
                f"{where}.models",
                f"{m} is not under models/: dvc.yaml tracks the ensemble through the models/ folder, "
                "so put every member there",
            )
        require(self.batch_size >= 1 and self.top_k_saved >= 3, where, "batch_size >= 1 and top_k_saved >= 3")


def run(cfg: PredictParams, source: Source, files: PredictFiles, progress: bool = True) -> StageResult:
    """The submission for ``source``'s test set, from the models ``cfg.models`` names, blended
    (recorded in ``files.blend`` even when the source has no test set: evaluate scores the blend)."""
    if source.test_file is None and source.kind == "kaggle":
        raise FileNotFoundError(f"{source.root}/test_simplified.csv not found: predict needs Kaggle's test file")
    groups = load_groups(resolve_groups(cfg.models, files.names, files.models))
    check_classes(groups[0].models[0], source)
    blend = blend_weights(cfg.weights, cfg.fit_rows, cfg.batch_size, cfg.tta_flip, groups, files.shards)
    write_blend_record(files.blend, blend_record(groups, blend, cfg.tta_flip))
    if source.test_file is None:
        return no_test_set(source, files)
    models, weights = flat(groups), file_weights(groups, blend.get("weights"))
    if source.kind == "digits":
        result = predict_digits(source, models, cfg, files, progress, weights)
    else:
        result = predict_drawings(source, models, cfg, files, progress, weights)
    result.values.update(blend)
    result.values["models"] = len(groups)
    result.values["model_files"] = len(models)
    return result


def check_classes(model: TrainedModel, source: Source) -> None:
    """Refuse a model that cannot label ``source``'s test set (the models share one class list,
    :func:`doodle.predict.members.load_groups`): a Digit Recognizer source needs the digits 0-9; a Quick Draw source
    needs classes among its own words (a digit model's '0'..'9' would make a well-formed
    submission of words the competition does not have)."""
    trained = f"predict.models: {model.path} was trained on classes {_some(model.classes)}"
    if source.kind == "digits":
        if model.classes != DIGIT_CLASSES:
            raise ParamError(f"{trained}, not the digits 0-9 of {source.root}: rerun train on this data.source")
        return
    words = set(source.classes)
    foreign = [c for c in model.classes if c not in words]
    if foreign:
        which = "none of them is" if len(foreign) == len(model.classes) else f"{_some(foreign, 3)} are not"
        raise ParamError(
            f"{trained}; {which} among the {len(words)} classes of {source.root} ({_some(source.classes, 3)}): "
            "rerun train on this data.source"
        )


def _some(names: list[str], n: int = 5) -> str:
    """The first ``n`` of ``names``, quoted, with ``...`` when there are more."""
    return ", ".join([repr(c) for c in names[:n]] + (["..."] if len(names) > n else []))


def predict_drawings(
    source: Source, models: list[TrainedModel], cfg: PredictParams, files: PredictFiles, progress: bool, weights=None
) -> StageResult:
    """Kaggle's Quick Draw submission: the top-3 words of every test_simplified.csv row."""
    t0 = time.perf_counter()
    timing = Timing()
    keys, probs, rejected = read_test_set(predict_test_file, models, source, cfg, timing, progress, weights)
    classes = models[0].classes
    do_balance = cfg.balance == "on" or (cfg.balance == "auto" and len(keys) >= 20 * len(classes))
    if do_balance:
        probs = balance(probs)
    write_submission(files.submission, keys, top3(probs), classes)
    validate_submission(files.submission, keys, classes)
    write_top_k(files.probabilities, keys, probs, classes, cfg.top_k_saved)

    seconds = time.perf_counter() - t0
    metrics = run_report(len(keys), rejected, do_balance, cfg, len(models), seconds, timing)
    metrics["render_share"] = round(timing.render_s / seconds, 3) if seconds else 0.0
    if source.test_labels_file is not None:
        metrics["test_map_at_3"], _ = score_submission(files.submission, source.test_labels_file)
    score = f", test MAP@3 {metrics['test_map_at_3']:.4f}" if "test_map_at_3" in metrics else ""
    line = (
        f"predict: {len(keys):,} rows -> {files.submission} (valid; balanced={do_balance}, tta={cfg.tta_flip}, "
        f"{len(models)} model(s)) in {seconds:.1f}s, rendering {timing.render_s:.2f}s{score}"
    )
    return StageResult(metrics, ("test_map_at_3",), line)


def read_test_set(predict_file, models, source: Source, cfg: PredictParams, timing, progress, weights):
    """(ids, probabilities, rejected counts) of the test file, streamed through ``predict_file``
    (the Quick Draw or the Digit Recognizer reader) with a progress bar over its bytes."""
    size = source.test_file.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="predict", disable=not progress) as bar:
        result = predict_file(
            models,
            source.test_file,
            cfg.batch_size,
            cfg.tta_flip,
            cfg.block_mb << 20,
            timing,
            progress=lambda n: bar.update(min(n, size - bar.n)),
            weights=weights,
        )
    if result.rejected:
        n = sum(result.rejected.values())
        log.warning("%d malformed test row(s) predicted from a blank image: %s", n, result.rejected)
    return result.key_ids, result.probs, result.rejected


def run_report(rows: int, rejected: dict, balanced: bool, cfg: PredictParams, models: int, seconds: float, timing):
    """What reports/test.json says of any predict run: rows, malformed rows, options and timings."""
    return {
        "test_rows": rows,
        "malformed_rows": sum(rejected.values()),
        "balanced": balanced,
        "tta_flip": cfg.tta_flip,
        "models": models,
        "seconds": round(seconds, 2),
        "render_seconds": round(timing.render_s, 2),
        "model_seconds": round(timing.model_s, 2),
    }


def no_test_set(source: Source, files: PredictFiles) -> StageResult:
    """Nothing to predict: say so, and leave no submission (an earlier source's would pretend to
    be this one's). metrics/test.json is empty; reports/test.json says why."""
    for stale in (files.submission, files.probabilities):
        if stale.exists():
            stale.unlink()
            log.info("removed %s: it was written for an earlier data.source", stale)
    files.submission.parent.mkdir(parents=True, exist_ok=True)
    return StageResult(
        {"test_rows": 0, "test_set": None, "source_kind": source.kind},
        ("test_map_at_3", "test_accuracy"),
        f"predict: {source.root} has no test set ({source.kind}); nothing to submit",
    )


def predict_digits(
    source: Source, models: list[TrainedModel], cfg: PredictParams, files: PredictFiles, progress: bool, weights=None
) -> StageResult:
    """Kaggle's Digit Recognizer submission: one ``ImageId,Label`` row per test.csv row, in order."""
    t0 = time.perf_counter()
    timing = Timing()
    ids, probs, rejected = read_test_set(predict_digit_file, models, source, cfg, timing, progress, weights)
    # The digits test set is not balanced by design (Quick Draw's is): balancing only when asked.
    do_balance = cfg.balance == "on"
    if do_balance:
        probs = balance(probs)
    write_digit_submission(files.submission, ids, probs.argmax(axis=1), DIGIT_CLASSES)
    validate_digit_submission(files.submission, len(ids))
    write_top_k(files.probabilities, ids, probs, DIGIT_CLASSES, cfg.top_k_saved, key="ImageId")
    seconds = time.perf_counter() - t0
    metrics = run_report(len(ids), rejected, do_balance, cfg, len(models), seconds, timing)
    metrics["malformed_reasons"] = rejected
    if source.test_labels_file is not None:
        metrics.update(score_digits(source.test_labels_file, files.submission, probs, DIGIT_CLASSES))
    score = (
        f", test accuracy {metrics['test_accuracy']:.4f}, MAP@3 {metrics['test_map_at_3']:.4f}"
        if "test_accuracy" in metrics
        else ""
    )
    line = (
        f"predict: {len(ids):,} rows -> {files.submission} (ImageId,Label; valid; {len(models)} model(s), "
        f"tta={cfg.tta_flip}) in {seconds:.1f}s{score}"
    )
    return StageResult(metrics, ("test_accuracy", "test_map_at_3"), line)
