"""The embedded default data sets, drawn from a seed, so a fresh clone runs without downloading
anything: procedural doodles in Kaggle's Quick, Draw! layout (``doodles``: ``train_simplified/``,
``test_simplified.csv``), the default, and synthetic handwritten digits in Kaggle's Digit Recognizer
layout (``digits``: ``train.csv``, ``test.csv``). Each comes with its true test labels and a share
of deliberately broken rows for the quarantine downstream. ``generate`` holds params.yaml's
``sample`` section and the one entry point that picks between the two generators."""
