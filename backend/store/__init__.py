"""Project state in Redis: every key and TTL in `keys`, typed access in `state`."""
