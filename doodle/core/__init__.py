"""doodle.core."""
