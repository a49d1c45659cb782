"""The input folders ``data.source`` can name: which layout a folder holds (``folder``), the Quick
Draw stroke readers for Kaggle's CSVs and Google's ndjson (``quickdraw``), the pixel readers for
the Digit Recognizer and numpy_bitmap (``pixels``), and a converter from MNIST's idx files to the
Digit Recognizer layout (``mnist``, ``python -m doodle.sources.mnist``). Every reader streams."""
