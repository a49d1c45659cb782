"""Where the stages read and write, relative to the project root: the paths dvc.yaml names as
deps and outs. Kept in one place so the library, the stages and dvc.yaml cannot drift apart
(tests/test_dvc_yaml.py checks the outs against these)."""

from __future__ import annotations

from pathlib import Path

SAMPLE = Path("data/sample")  # the embedded default data set (stage sample)
SHARDS = Path("data/shards")  # shuffled parquet shards (stage shard)
CACHE = Path("data/cache")  # rendered image arrays (stage render)

MODELS = Path("models")
MODEL = MODELS / "model.keras"  # the model predict and evaluate use by default (stage train)
MODEL_META = MODELS / "model.json"  # its classes and render params
MEMBERS = MODELS / "members"  # an ensemble's members and the out-of-fold probabilities
BACKUP = MODELS / "backup"  # the resume state of a training in progress

SUBMISSION = Path("submissions/submission.csv")  # stage predict
PROBABILITIES = Path("submissions/probabilities.parquet")  # the top-k probabilities, for blending

REPORTS = Path("reports")  # images and full figures; metrics/ holds the headline numbers
DVCLIVE = Path("dvclive")  # the training curves (DVCLive)
