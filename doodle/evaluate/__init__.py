"""doodle.evaluate."""
