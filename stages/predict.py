"""Stage `predict`: render and classify the test set; write the top-3 Kaggle submission CSV.

Also writes the top-k probabilities (parquet, for blending) and, when the source has answers
(the embedded sample's test_labels.csv), the test MAP@3.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from doodle.inference import Timing, TrainedModel, predict_test_file
from doodle.params import ParamError, load_section, read_params, require
from doodle.sources import DataParams, resolve_source
from doodle.submission import balance, score_submission, top3, validate_submission, write_submission, write_top_k
from stages import _cli

SUBMISSION = Path("submissions/submission.csv")
PROBS = Path("submissions/probabilities.parquet")
log = logging.getLogger("stages.predict")


@dataclass
class PredictParams:
    """params.yaml section ``predict``."""

    models: list[str] = field(default_factory=lambda: ["models/model.keras"])  # >1 = ensemble
    batch_size: int = 512
    tta_flip: bool = False
    balance: str | bool = "auto"  # auto | on | off (YAML reads on/off as true/false: both work)
    top_k_saved: int = 10
    block_mb: int = 4

    def validate(self, where: str = "predict") -> None:
        require(bool(self.models), f"{where}.models", "name at least one model")
        if isinstance(self.balance, bool):
            self.balance = "on" if self.balance else "off"
        self.balance = {"true": "on", "false": "off"}.get(str(self.balance).lower(), str(self.balance).lower())
        require(
            self.balance in ("auto", "on", "off"), f"{where}.balance", f"must be auto, on or off, got {self.balance}"
        )
        for m in self.models:
            require(
                Path(m).parts[:1] == ("models",) and ".." not in Path(m).parts,
                f"{where}.models",
                f"{m} is not under models/: dvc.yaml tracks the ensemble through the models/ folder, "
                "so put every member there",
            )
        require(self.batch_size >= 1 and self.top_k_saved >= 3, where, "batch_size >= 1 and top_k_saved >= 3")


def main(argv=None) -> None:
    args = _cli.parser(__doc__).parse_args(argv)
    _cli.setup_logging()
    params = read_params(args.params)
    cfg = load_section(PredictParams, "predict", params)
    source = resolve_source(load_section(DataParams, "data", params).source)
    if source.test_file is None:
        raise FileNotFoundError(f"{source.root}/test_simplified.csv not found: predict needs Kaggle's test file")
    models = [TrainedModel.load(p) for p in cfg.models]
    classes = models[0].classes
    for m in models[1:]:
        if m.classes != classes:
            raise ParamError(f"predict.models: {m.path} was trained on other classes than {models[0].path}")

    t0 = time.perf_counter()
    timing = Timing()
    size = source.test_file.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="predict", disable=args.quiet) as bar:
        result = predict_test_file(
            models,
            source.test_file,
            cfg.batch_size,
            cfg.tta_flip,
            cfg.block_mb << 20,
            timing,
            progress=lambda n: bar.update(min(n, size - bar.n)),
        )
    keys, probs, rejected = result.key_ids, result.probs, result.rejected
    if rejected:
        log.warning("%d malformed test row(s) predicted from a blank image: %s", sum(rejected.values()), rejected)

    n_classes = len(classes)
    do_balance = cfg.balance == "on" or (cfg.balance == "auto" and len(keys) >= 20 * n_classes)
    if do_balance:
        probs = balance(probs)
    write_submission(SUBMISSION, keys, top3(probs), classes)
    validate_submission(SUBMISSION, keys, classes)
    write_top_k(PROBS, keys, probs, classes, cfg.top_k_saved)

    seconds = time.perf_counter() - t0
    metrics = {
        "test_rows": len(keys),
        "malformed_rows": sum(rejected.values()),
        "balanced": do_balance,
        "tta_flip": cfg.tta_flip,
        "models": len(models),
        "seconds": round(seconds, 2),
        "render_seconds": round(timing.render_s, 2),
        "model_seconds": round(timing.model_s, 2),
        "render_share": round(timing.render_s / seconds, 3) if seconds else 0.0,
    }
    if source.test_labels_file is not None:
        metrics["test_map_at_3"], _ = score_submission(SUBMISSION, source.test_labels_file)
    _cli.write_metrics("test", metrics, headline=("test_map_at_3",))
    score = f", test MAP@3 {metrics['test_map_at_3']:.4f}" if "test_map_at_3" in metrics else ""
    print(
        f"predict: {len(keys):,} rows -> {SUBMISSION} (valid; balanced={do_balance}, tta={cfg.tta_flip}, "
        f"{len(models)} model(s)) in {seconds:.1f}s, rendering {timing.render_s:.2f}s{score}"
    )


if __name__ == "__main__":
    _cli.run(main)
