"""The predict stage: loading trained models and predicting a test file through the same
rasterizer as training (``inference``), the stage's run (``run``), and the Kaggle submission
files: writing, validating, balancing and scoring them (``submission``)."""
