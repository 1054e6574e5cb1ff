"""Cluster health as this edge observes it: active probes, and the board shared by workers."""
