"""The session map: pins in Redis, and what keeps a session sticky when Redis is not."""
