"""Scripts that print measured numbers; run from the repository root as ``python -m benchmarks.<name>``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any benchmark imports TensorFlow
