"""Stage `predict`: render and classify the test set; write the top-3 Kaggle submission CSV.

Also writes the top-k probabilities (parquet, for blending) and, when the source has answers
(the embedded sample's test_labels.csv), the test MAP@3.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from doodle.inference import Timing, TrainedModel, predict_probs
from doodle.metrics import top_k
from doodle.params import load_section, read_params, require
from doodle.sources import DataParams, iter_test_blocks, resolve_source
from doodle.strokes import DRAWING_REASONS, parse_drawings
from doodle.submission import balance, kaggle_label, score_submission, top3, validate_submission, write_submission
from stages import _cli

SUBMISSION = Path("submissions/submission.csv")
PROBS = Path("submissions/probabilities.parquet")
METRICS = Path("metrics/test.json")
log = logging.getLogger("stages.predict")


@dataclass
class PredictParams:
    """params.yaml section ``predict``."""

    models: list[str] = field(default_factory=lambda: ["models/model.keras"])  # >1 = ensemble
    batch_size: int = 512
    tta_flip: bool = False
    balance: str = "auto"  # auto | on | off; auto = on when the test set has >= 20 rows a class
    top_k_saved: int = 10
    block_mb: int = 4

    def validate(self, where: str = "predict") -> None:
        require(bool(self.models), f"{where}.models", "name at least one model")
        require(self.balance in ("auto", "on", "off"), f"{where}.balance", "must be auto, on or off")
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
            raise ValueError(f"ensemble member {m.path} was trained on other classes than {models[0].path}")

    t0 = time.perf_counter()
    timing = Timing()
    keys, chunks, rejected = [], [], {}
    size = source.test_file.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="predict", disable=args.quiet) as bar:
        for table in iter_test_blocks(source.test_file, cfg.block_mb << 20):
            parsed = parse_drawings(table["drawing"])
            for code, name in DRAWING_REASONS.items():
                if n := int((parsed.status == code).sum()):
                    rejected[name] = rejected.get(name, 0) + n
            strokes = parsed.strokes.expand(parsed.valid)
            chunks.append(predict_probs(models, strokes, cfg.batch_size, cfg.tta_flip, timing))
            keys.extend(k.strip() for k in table["key_id"].to_pylist())
            bar.update(min(table.nbytes, size - bar.n))
    probs = np.concatenate(chunks) if chunks else np.zeros((0, len(classes)), np.float32)
    if rejected:
        log.warning("%d malformed test drawing(s) predicted from a blank image: %s", sum(rejected.values()), rejected)

    n_classes = len(classes)
    do_balance = cfg.balance == "on" or (cfg.balance == "auto" and len(keys) >= 20 * n_classes)
    if do_balance:
        probs = balance(probs)
    write_submission(SUBMISSION, keys, top3(probs), classes)
    validate_submission(SUBMISSION, keys, classes)

    k = min(cfg.top_k_saved, n_classes)
    order = top_k(probs, k)
    names = np.array([kaggle_label(c) for c in classes], dtype=object)
    cols = {"key_id": pa.array(keys)}
    for j in range(k):
        cols[f"label_{j + 1}"] = pa.array(names[order[:, j]].tolist())
        cols[f"prob_{j + 1}"] = pa.array(np.take_along_axis(probs, order[:, j : j + 1], 1)[:, 0])
    pq.write_table(pa.table(cols), PROBS)

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
    METRICS.parent.mkdir(exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    score = f", test MAP@3 {metrics['test_map_at_3']:.4f}" if "test_map_at_3" in metrics else ""
    print(
        f"predict: {len(keys):,} rows -> {SUBMISSION} (valid; balanced={do_balance}, tta={cfg.tta_flip}, "
        f"{len(models)} model(s)) in {seconds:.1f}s, rendering {timing.render_s:.2f}s{score}"
    )


if __name__ == "__main__":
    _cli.run(main)
