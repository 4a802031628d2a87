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
    if metric.kind is Kind.COUNT and value < 0:
        raise MetricError(f"{metric.name} is a count; {value} is negative")
    rendered = ",".join(f"{key}:{tag_value(tags[key])}" for key in metric.tags)
    number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
    joined = ",".join(part for part in (rendered, constant) if part)
    return f"{metric.name}:{number}|{metric.kind.value}" + (f"|#{joined}" if joined else "")


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

    @classmethod
    def disabled(cls, service: str = "test") -> Metrics:
        """An emitter that checks every call against the catalog and sends nothing."""
        return cls(service=service, enabled=False)

    def emit(self, metric: Metric, value: float = 1, /, **tags: TagValue) -> None:
        """Send one value of ``metric``; ``tags`` must be exactly the ones the catalog declares for it."""
        line = format_line(metric, value, tags, self.constant)
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
