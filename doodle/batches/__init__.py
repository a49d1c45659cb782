"""doodle.batches."""
