"""Where a client is, from a MaxMind-format GeoIP database."""
