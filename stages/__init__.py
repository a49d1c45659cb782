"""Pipeline stages: one thin module per stage in dvc.yaml, each runnable as ``python -m stages.<name>``."""

import os

# TensorFlow's C++ start-up notices (CPU features, oneDNN) are noise in a stage's log: keep only
# its errors, unless the user set a level. Here, because this runs before any stage imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
