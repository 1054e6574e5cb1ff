"""The HTTP face of an edge: the ASGI app, the routing API, status, admin and metrics."""
