"""The scheduler worker: a FastStream app."""
