"""doodle.shard."""
