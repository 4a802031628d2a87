"""The scorer worker: a FastStream app."""
