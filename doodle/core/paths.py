"""Where the stages read and write, relative to the project root: the paths dvc.yaml names as
deps and outs. Kept in one place so the library, the stages and dvc.yaml cannot drift apart
(tests/stages/test_dvc_yaml.py checks the outs against these)."""

from __future__ import annotations

from pathlib import Path

SAMPLE = Path("data/sample")  # the embedded default data set (stage sample)
SHARDS = Path("data/shards")  # shuffled parquet shards (stage shard)
CACHE = Path("data/cache")  # rendered image arrays (stage render)

MODELS = Path("models")  # models/<name>/: each model params.yaml's `models` names (stage train@<name>)
MODEL_FILE = "model.keras"  # in models/<name>/: the model (with train.folds or seeds > 1, the reference member)
META_FILE = "model.json"  # its classes, input encoder and history
MEMBERS = "members"  # models/<name>/members/: an ensemble's members and the out-of-fold probabilities
BACKUP = MODELS / "backup"  # <name>/: the resume state of a model's training in progress
RESOLVED_MODELS = Path("reports/models")  # <name>.json: each model's train section (stage check)
BLEND = Path("reports/blend.json")  # the models predict averaged and their weights (stage predict)

SUBMISSION = Path("submissions/submission.csv")  # stage predict
PROBABILITIES = Path("submissions/probabilities.parquet")  # the top-k probabilities, for blending

REPORTS = Path("reports")  # images and full figures; metrics/ holds the headline numbers
DVCLIVE = Path("dvclive")  # <name>/: each model's training curves (DVCLive)


def model_dir(name: str) -> Path:
    """Where model ``name`` of params.yaml's ``models`` lives: models/<name>/."""
    return MODELS / name
