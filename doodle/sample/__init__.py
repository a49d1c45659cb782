"""doodle.sample."""
