"""Running the app: the server on its socket, and the supervisor of worker processes."""
