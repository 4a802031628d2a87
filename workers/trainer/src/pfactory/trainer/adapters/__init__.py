"""Backends of the trainer's roles: ``process`` and ``kubernetes`` launch isolated runs."""
