"""doodle.sources."""
