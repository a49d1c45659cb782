"""doodle: library code behind the Quick, Draw! DVC pipeline.

Grouped by domain: ``params`` (typed params.yaml sections), ``strokes`` (drawing text ->
flat stroke arrays), ``sources`` (Kaggle CSV / ndjson / embedded sample readers),
``sample_data`` (the procedural default data set), ``shards`` (shuffle + shard into parquet),
``raster`` (the one rasterizer), ``datasets`` (batch streams and tf.data), ``models``
(one module per architecture), ``metrics`` (MAP@3), ``submission`` (top-3 CSV, balancing,
scoring) and ``plots``.
"""

from .core import quiet_tensorflow

# Any use of the library (a stage, a benchmark, a notebook) imports TensorFlow without its C++
# start-up notices: see doodle.core.quiet_tensorflow. Installed here, before anything imports Keras.
quiet_tensorflow.install()
