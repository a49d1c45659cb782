"""The ``score`` command: a submission file's MAP@3 against an answers file, as Kaggle scores it."""
