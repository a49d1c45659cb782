"""Pipeline stages: one thin module per stage in dvc.yaml, each runnable as ``python -m stages.<name>``."""
