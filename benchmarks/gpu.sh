#!/usr/bin/env bash
# Training throughput on a GPU machine without TensorFlow (Keras on JAX): `ours`, MobileNet at 64 px
# and the stroke-sequence model, the model alone and the full input path, as one JSON line last.
# Runs in a few minutes on a bare machine that has JAX and the project's other libraries but no
# Keras: then it installs the wheels carried in .whl/ (keras, namex, optree; see README "GPU").
#
#   bash benchmarks/gpu.sh [--steps 40] [--batch 512] [--models ours sequence]
#   JAX_PLATFORMS=cpu bash benchmarks/gpu.sh --steps 2 --batch 16 --per-class 50   # on a CPU
#
# Arguments go to `python -m benchmarks.gpu` (its --help says what they are). PYTHON picks the
# interpreter (default python3), WORKDIR where the data set is written (default a new temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import keras" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/doodle-site .whl/*.whl
    export PYTHONPATH=/tmp/doodle-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu.sh: keras is not installed and .whl/ holds no wheels to install it from (README, GPU)" >&2
    exit 2
  fi
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TF_CPP_MIN_LOG_LEVEL=2
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/doodle-gpu-XXXXXX)}
exec "$PYTHON" -m benchmarks.gpu --workdir "$WORKDIR" "$@"
