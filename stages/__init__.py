"""Pipeline stages: one thin module per stage in dvc.yaml, each runnable as ``python -m stages.<name>``."""

from doodle.core import quiet_tensorflow

# No TensorFlow start-up notices in a stage's log (doodle.core.quiet_tensorflow); here too, so it holds
# before a stage module's first import, whichever that is.
quiet_tensorflow.install()
