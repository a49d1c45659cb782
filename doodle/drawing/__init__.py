"""doodle.drawing."""
