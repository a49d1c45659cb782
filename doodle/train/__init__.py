"""doodle.train."""
