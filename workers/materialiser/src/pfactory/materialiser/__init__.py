"""The materialiser worker: a FastStream app."""
