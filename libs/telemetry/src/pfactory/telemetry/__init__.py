"""Prediction Factory telemetry: the metric catalog, DogStatsD, ddtrace, JSON logs."""
