"""The data path: a request carried to its cluster and the answer carried back, streamed."""
