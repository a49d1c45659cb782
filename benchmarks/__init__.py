"""Scripts that print measured numbers; run from the repository root as ``python -m benchmarks.<name>``."""

from doodle.core import quiet_tensorflow

quiet_tensorflow.install()  # before any benchmark imports TensorFlow: no C++ start-up notices
