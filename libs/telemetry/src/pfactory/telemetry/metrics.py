"""DogStatsD over UDP, for catalog metrics only.

One line per datagram, in the DogStatsD format (``name:value|type|#tag:value,...``), sent without
waiting and without an answer: with no agent listening nothing happens and nothing is logged. Errors
a caller can fix are raised at once (a metric not in the catalog, tags other than the declared ones),
so a wrong call fails its first test rather than emitting a series no dashboard queries.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping

from pfactory.telemetry.catalog import CATALOG, UNIFIED_TAGS, Kind, Metric

TagValue = str | int | float | bool | None

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./:@]")
_MAX_TAG = 200


def tag_value(value: TagValue) -> str:
    """A tag value as DogStatsD accepts it: no ``,`` ``|`` ``#`` or spaces; lower-cased booleans."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _UNSAFE.sub("_", str(value))[:_MAX_TAG] or "none"


class MetricError(ValueError):
    """A call site used a metric or tags the catalog does not declare."""


def format_line(metric: Metric, value: float, tags: Mapping[str, TagValue], constant: str) -> str:
    """The DogStatsD line for one value (checks the metric and its tags against the catalog)."""
    head, tail = line_parts(metric, tags, constant)
    return head + _number(metric, value) + tail


def line_parts(metric: Metric, tags: Mapping[str, TagValue], constant: str) -> tuple[str, str]:
    """``("name:", "|type|#tags")`` of a checked metric and tag set: the line around its value."""
    if CATALOG.get(metric.name) is not metric:
        raise MetricError(f"{metric.name!r} is not in pfactory.telemetry.catalog; declare it there first")
    if set(tags) != set(metric.tags):
        missing = sorted(set(metric.tags) - set(tags))
        extra = sorted(set(tags) - set(metric.tags))
        raise MetricError(
            f"{metric.name} is tagged {list(metric.tags)} in the catalog; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"undeclared {extra}" if extra else "")
            + " (change the call, or the catalog and the dashboards that query it)"
        )
    for key, allowed in metric.values.items():
        if tag_value(tags[key]) not in allowed:
            raise MetricError(
                f"{metric.name}: {key}={tags[key]!r} is not one of {list(allowed)} "
                "(use one of them, or add the value to the catalog and the dashboards)"
            )
    rendered = ",".join(f"{key}:{tag_value(tags[key])}" for key in metric.tags)
    joined = ",".join(part for part in (rendered, constant) if part)
    return f"{metric.name}:", f"|{metric.kind.value}" + (f"|#{joined}" if joined else "")


def _number(metric: Metric, value: float) -> str:
    if metric.kind is Kind.COUNT and value < 0:
        raise MetricError(f"{metric.name} is a count; {value} is negative")
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


_CACHED_TAG_SETS = 10_000
"""Checked tag sets kept per emitter (a hot path repeats a handful; beyond this, lines are built anew)."""


class Metrics:
    """Emits catalog metrics to a DogStatsD agent at ``host:port`` (``enabled=False``: checks only)."""

    def __init__(
        self,
        *,
        service: str,
        env: str = "dev",
        version: str = "0.1.0",
        host: str = "127.0.0.1",
        port: int = 8125,
        enabled: bool = True,
    ) -> None:
        self.service = service
        self.constant = ",".join(
            f"{key}:{tag_value(value)}"
            for key, value in zip(UNIFIED_TAGS, (service, env, version), strict=True)
        )
        self._address = (host, port)
        self._enabled = enabled
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._checked: dict[tuple[object, ...], tuple[str, str]] = {}

    @classmethod
    def disabled(cls, service: str = "test") -> Metrics:
        """An emitter that checks every call against the catalog and sends nothing."""
        return cls(service=service, enabled=False)

    def emit(self, metric: Metric, value: float = 1, /, **tags: TagValue) -> None:
        """Send one value of ``metric``; ``tags`` must be exactly the ones the catalog declares for it."""
        key = (id(metric), *tags.items())  # catalog metrics live as long as the process: ids stay theirs
        try:
            parts = self._checked.get(key)
        except TypeError:  # an unhashable tag value: checked (and refused) below, never cached
            parts = None
        if parts is None:
            parts = line_parts(metric, tags, self.constant)
            if len(self._checked) < _CACHED_TAG_SETS:
                self._checked[key] = parts
        line = parts[0] + _number(metric, value) + parts[1]
        if not self._enabled:
            return
        with self._lock:
            if self._socket is None:
                family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
                self._socket = socket.socket(family, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            with contextlib.suppress(OSError):  # no agent, a full buffer: metrics are best effort
                self._socket.sendto(line.encode(), self._address)

    @contextlib.contextmanager
    def timer(self, metric: Metric, **tags: TagValue) -> Iterator[None]:
        """Emit the block's wall time in milliseconds (also when it raises)."""
        if metric.unit != "millisecond":
            raise MetricError(f"{metric.name} is measured in {metric.unit}, not milliseconds")
        format_line(metric, 0, tags, self.constant)  # a wrong call fails before the work, not after
        started = time.perf_counter()
        try:
            yield
        finally:
            self.emit(metric, (time.perf_counter() - started) * 1000, **tags)

    def close(self) -> None:
        """Release the socket (a later emit opens a new one)."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
