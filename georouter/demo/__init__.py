"""The demo: stand-in clusters on loopback and an edge in front of them, on one machine."""
