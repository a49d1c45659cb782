"""Batches for training and scoring, with memory that does not grow with the data: the render
cache the render stage writes and memory-maps (``cache``), the shuffled batch stream over it and
its tf.data wrapper (``stream``), and batches drawn on the fly from the stroke shards with the
same rasterizer (``strokes``)."""
