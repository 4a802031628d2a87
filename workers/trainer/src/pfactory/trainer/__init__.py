"""The trainer worker: a FastStream app."""
