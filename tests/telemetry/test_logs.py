"""Log lines: the text format as before, or one JSON object per line with service tags and trace ids."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import timeit
import uuid
from datetime import UTC, datetime

import pytest

from pfactory.telemetry.logs import JsonFormatter, configure_logging, formatter
from pfactory.telemetry.settings import TelemetrySettings

JSON_SETTINGS = TelemetrySettings(json_logs=True, env="staging", version="2.4.1")
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<msg>.*)$"
)


def _capture(settings: TelemetrySettings) -> tuple[logging.Logger, io.StringIO]:
    """A fresh logger writing through ``formatter(settings)`` into a buffer (the root logger is left alone)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter(settings, "gateway"))
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, buffer


def test_a_json_line_has_time_level_logger_message_and_unified_tags() -> None:
    logger, buffer = _capture(JSON_SETTINGS)
    before = datetime.now(UTC)
    logger.info("job %s is %s", "j-1", "running", extra={"topic": "pf.jobs"})
    (line,) = buffer.getvalue().splitlines()
    entry = json.loads(line)
    stamp = datetime.fromisoformat(entry.pop("timestamp"))
    assert stamp.tzinfo is not None and stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((stamp - before).total_seconds()) < 5
    assert entry == {
        "level": "INFO",
        "logger": logger.name,
        "message": "job j-1 is running",
        "service": "gateway",
        "env": "staging",
        "version": "2.4.1",
        "topic": "pf.jobs",
    }


def test_json_lines_carry_the_active_spans_ids_and_the_exception() -> None:
    logger, buffer = _capture(JSON_SETTINGS)
    # the attributes ddtrace's logging integration puts on a record made inside a span
    inside = {"dd.trace_id": "6b119cda00000000e03de025eaf94210", "dd.span_id": "1723312606445912646"}
    outside = {"dd.trace_id": "0", "dd.span_id": "0"}
    try:
        raise KeyError("model 'credit'")
    except KeyError:
        logger.exception('lookup failed:\n"quoted" é', extra=inside)
    logger.warning("no span", extra=outside)
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert (first["dd.trace_id"], first["dd.span_id"]) == (inside["dd.trace_id"], inside["dd.span_id"])
    assert first["message"] == 'lookup failed:\n"quoted" é'
    assert first["exception"].startswith("Traceback") and "KeyError: \"model 'credit'\"" in first["exception"]
    assert "dd.trace_id" not in second and "exception" not in second and "dd.service" not in second


def test_text_lines_look_as_they_did() -> None:
    logger, buffer = _capture(TelemetrySettings(json_logs=False))
    logger.warning("disk %d%% full", 91)
    match = TEXT_LINE.match(buffer.getvalue().rstrip("\n"))
    assert match, buffer.getvalue()
    assert match.group("level", "logger", "msg") == ("WARNING", logger.name, "disk 91% full")


def test_an_unknown_level_is_refused_before_anything_changes() -> None:
    handlers = logging.getLogger().handlers[:]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'; use one of DEBUG"):
        configure_logging(JSON_SETTINGS, "gateway", "LOUD")
    assert logging.getLogger().handlers == handlers


def test_configure_logging_sets_the_root_format_and_level_and_can_switch() -> None:
    script = textwrap.dedent(
        """
        import logging
        from pfactory.telemetry.logs import configure_logging, is_configured
        from pfactory.telemetry.settings import TelemetrySettings

        assert not is_configured()
        configure_logging(TelemetrySettings(json_logs=True, env="staging", version="2.4.1"), "svc", "warning")
        log = logging.getLogger("pfactory.probe")
        log.info("below the level")
        log.warning("first")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("second")
        configure_logging(TelemetrySettings(json_logs=False), "svc", "INFO")
        log.info("third")
        assert is_configured() and len(logging.getLogger().handlers) == 1
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    first, second, third = done.stderr.decode().splitlines()
    assert json.loads(first)["message"] == "first" and json.loads(first)["level"] == "WARNING"
    assert json.loads(second)["service"] == "svc" and "ZeroDivisionError" in json.loads(second)["exception"]
    match = TEXT_LINE.match(third)
    assert match and match.group("level", "logger", "msg") == ("INFO", "pfactory.probe", "third")


def test_the_json_formatter_keeps_up_with_the_text_one() -> None:
    """Formatting cost per record: JSON may cost a few times the text line, not orders of magnitude."""
    record = logging.LogRecord(
        "pfactory.bus", logging.INFO, __file__, 1, "handled %s in %d ms", ("x", 3), None
    )
    json_formatter = JsonFormatter(service="gateway", env="staging", version="2.4.1")
    text_formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    json_cost = min(timeit.repeat(lambda: json_formatter.format(record), number=2000, repeat=5))
    text_cost = min(timeit.repeat(lambda: text_formatter.format(record), number=2000, repeat=5))
    assert json_cost < 6 * text_cost, (json_cost, text_cost)
