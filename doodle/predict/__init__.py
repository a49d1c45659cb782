"""doodle.predict."""
