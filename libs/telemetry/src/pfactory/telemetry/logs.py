"""How every process logs: a readable text line, or one JSON object per line for Datadog.

JSON lines carry the unified service tags and, while a span is active and tracing is on, the
span's ``dd.trace_id``/``dd.span_id`` (ddtrace's logging integration puts them on each record), so
Datadog links a log line to its trace. Standard library only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from pfactory.telemetry.settings import TelemetrySettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has, ddtrace's (reported under their own keys) and uvicorn's coloured
# copy of the message; anything else on a record came from ``extra=`` or a library filter and is
# logged as a field.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
    | {"dd.trace_id", "dd.span_id", "dd.service", "dd.env", "dd.version"}
)
_OURS = "_pfactory_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC), level, logger, message, unified tags, trace ids."""

    def __init__(self, *, service: str, env: str, version: str) -> None:
        super().__init__()
        self._tags = {"service": service, "env": env, "version": version}
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "timestamp": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._tags,
        }
        fields = record.__dict__
        trace_id = fields.get("dd.trace_id")
        if trace_id and trace_id != "0":
            entry["dd.trace_id"] = trace_id
            entry["dd.span_id"] = fields.get("dd.span_id", "0")
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in fields.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        return self._encode(entry)


def formatter(settings: TelemetrySettings, service: str) -> logging.Formatter:
    """The formatter ``settings`` ask for: JSON when ``json_logs``, else the text line."""
    if settings.json_logs:
        return JsonFormatter(service=service, env=settings.env, version=settings.version)
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: TelemetrySettings, service: str, level: str | int = "INFO") -> None:
    """Send the root logger's records to stderr in the format ``settings`` ask for.

    Replaces the root logger's handlers (like ``logging.basicConfig(force=True)``), so calling it
    again switches format or level.

    Args:
        settings: the process's telemetry settings (``json_logs``, ``env``, ``version``).
        service: the ``service`` field of JSON lines.
        level: the root logger's level, a name (``"INFO"``) or number.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    resolved = _level(level)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(_handler(settings, service, sys.stderr))
    root.setLevel(resolved)


def adopt_logger(name: str, settings: TelemetrySettings, service: str, stream: TextIO) -> None:
    """Give logger ``name``, which a library set up with its own handlers, one in our format on ``stream``.

    For libraries whose loggers do not propagate to the root (FastStream's), so that in JSON mode
    every line of the process is JSON.
    """
    logger = logging.getLogger(name)
    for old in logger.handlers[:]:
        logger.removeHandler(old)
    logger.addHandler(_handler(settings, service, stream))


def is_configured() -> bool:
    """Whether :func:`configure_logging` set up the root logger of this process."""
    return any(getattr(handler, _OURS, False) for handler in logging.getLogger().handlers)


def _handler(settings: TelemetrySettings, service: str, stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(settings, service))
    setattr(handler, _OURS, True)
    return handler


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    resolved = logging.getLevelName(level.upper())
    if not isinstance(resolved, int):
        raise ValueError(f"unknown log level {level!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return resolved
