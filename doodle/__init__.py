"""doodle: the library behind the Quick, Draw! DVC pipeline, one subpackage per pipeline role.

Listed from the foundation up: a subpackage imports only from itself and those listed before it,
never from a stage (tests/test_layout.py checks):

    core       params.yaml loading, errors, paths, process pool, allocator, MAP@3, plots
    drawing    strokes -> pixels: parser, the one rasterizer, image fitting, stroke augmentation
    sources    input folders: layout detection, Quick Draw readers, pixel readers, MNIST converter
    sample     stage sample: the embedded default data sets (procedural doodles, synthetic digits)
    shard      stage shard: two-pass shuffle into parquet shards, and the shard format
    render     stage render: the render section, the cache's format, drawing the shards into it
    batches    the render cache read back, batch streams and tf.data, batches drawn on the fly
    models     one module per architecture (pure Keras 3)
    train      stage train: fitting, callbacks, resume, ensembles and folds
    baseline   stage baseline: the classical PCA + SVM, scored on the network's validation split
    predict    stage predict: inference, the run, the submission files
    evaluate   stage evaluate: error analysis, its reports, embedding and activation views
    score      the score command: a submission file's MAP@3 against an answers file

Each stage's package has a ``run`` module whose ``run(params..., directories...) -> StageResult``
is the whole stage; ``stages/<name>.py`` only parses arguments, reads its sections, passes the
project's paths (doodle.core.paths, which only stages import) and reports.

On top: ``sections`` (params.yaml section -> dataclass, the one map), ``recipes`` (named sets of
params overrides), ``lineup`` (the ``models`` section: each model's train section) and ``routes``
(params for a data set's size and a machine).
"""

from .core import quiet_tensorflow

# Any use of the library (a stage, a benchmark, a notebook) imports TensorFlow without its C++
# start-up notices: see doodle.core.quiet_tensorflow. Installed here, before anything imports Keras.
quiet_tensorflow.install()
