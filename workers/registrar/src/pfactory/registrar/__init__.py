"""The registrar worker: a FastStream app."""
