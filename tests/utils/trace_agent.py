"""A Datadog trace-agent stand-in: a threaded HTTP server on 127.0.0.1 that keeps the spans it receives.

The real agent cannot run here, so this implements the agent's documented wire contract as the
tracer uses it: ``GET /info`` (what the agent offers), ``PUT``/``POST /v0.4/traces`` (a MessagePack
array of traces, each an array of span maps) and ``/v0.5/traces`` (a MessagePack
``[string_table, traces]`` pair whose spans are 12-element arrays of string-table indices and
numbers), answered with ``{"rate_by_service": ...}``. Instrumentation telemetry and anything else
is accepted and ignored. The MessagePack decoder below covers the whole format (the ``msgpack``
package is not installed); ``tests/telemetry/test_tracing.py`` checks it against ddtrace's encoder.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

V05_FIELDS = (
    "service",
    "name",
    "resource",
    "trace_id",
    "span_id",
    "parent_id",
    "start",
    "duration",
    "error",
    "meta",
    "metrics",
    "type",
)


class MsgpackError(ValueError):
    """The bytes are not valid MessagePack."""


def unpackb(data: bytes) -> Any:
    """Decode one MessagePack object that spans all of ``data`` (extension types are refused)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise MsgpackError(f"{len(data) - end} trailing bytes after the object")
    return value


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise MsgpackError("truncated data")
    byte = data[pos]
    pos += 1
    if byte <= 0x7F:
        return byte, pos
    if byte >= 0xE0:
        return byte - 0x100, pos
    if 0x80 <= byte <= 0x8F:
        return _map(data, pos, byte & 0x0F)
    if 0x90 <= byte <= 0x9F:
        return _array(data, pos, byte & 0x0F)
    if 0xA0 <= byte <= 0xBF:
        return _str(data, pos, byte & 0x1F)
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if byte in fixed:
        return fixed[byte], pos
    numbers = {
        0xCA: ">f",
        0xCB: ">d",
        0xCC: ">B",
        0xCD: ">H",
        0xCE: ">I",
        0xCF: ">Q",
        0xD0: ">b",
        0xD1: ">h",
        0xD2: ">i",
        0xD3: ">q",
    }
    if byte in numbers:
        fmt = numbers[byte]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, _need(data, pos, size), pos)[0], pos + size
    lengths = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
    lengths |= {0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"}
    if byte not in lengths:
        raise MsgpackError(f"unsupported type byte 0x{byte:02x} at offset {pos - 1}")
    fmt = lengths[byte]
    size = struct.calcsize(fmt)
    (length,) = struct.unpack_from(fmt, _need(data, pos, size), pos)
    pos += size
    if byte in (0xC4, 0xC5, 0xC6):
        return bytes(_need(data, pos, length)[pos : pos + length]), pos + length
    if byte in (0xD9, 0xDA, 0xDB):
        return _str(data, pos, length)
    if byte in (0xDC, 0xDD):
        return _array(data, pos, length)
    return _map(data, pos, length)


def _need(data: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(data):
        raise MsgpackError("truncated data")
    return data


def _str(data: bytes, pos: int, length: int) -> tuple[str, int]:
    return _need(data, pos, length)[pos : pos + length].decode("utf-8"), pos + length


def _array(data: bytes, pos: int, length: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(length):
        item, pos = _decode(data, pos)
        items.append(item)
    return items, pos


def _map(data: bytes, pos: int, length: int) -> tuple[dict[Any, Any], int]:
    items = {}
    for _ in range(length):
        key, pos = _decode(data, pos)
        items[key], pos = _decode(data, pos)
    return items, pos


def spans_from_payload(endpoint: str, body: bytes) -> list[dict[str, Any]]:
    """The spans of one ``/v0.4/traces`` or ``/v0.5/traces`` payload, as v0.4-style span maps."""
    payload = unpackb(body)
    if endpoint == "v0.4":
        return [dict(span) for trace in payload for span in trace]
    strings, traces = payload
    spans = []
    for trace in traces:
        for row in trace:
            if len(row) != len(V05_FIELDS):
                raise MsgpackError(f"a v0.5 span has {len(V05_FIELDS)} fields, got {len(row)}")
            span = dict(zip(V05_FIELDS, row, strict=True))
            for key in ("service", "name", "resource", "type"):
                span[key] = strings[span[key]]
            span["meta"] = {strings[k]: strings[v] for k, v in span["meta"].items()}
            span["metrics"] = {strings[k]: v for k, v in span["metrics"].items()}
            spans.append(span)
    return spans


def full_trace_id(span: dict[str, Any]) -> int:
    """The 128-bit trace id: the wire carries the low 64 bits, the high ones in meta ``_dd.p.tid``."""
    high = span["meta"].get("_dd.p.tid")
    return (int(high, 16) << 64 | span["trace_id"]) if high else int(span["trace_id"])


@dataclass
class TraceAgent:
    """What the fake agent received; ``url`` is its base URL (DD_TRACE_AGENT_URL)."""

    url: str
    spans: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def matching(self, **attrs: Any) -> list[dict[str, Any]]:
        """Spans whose top-level fields equal ``attrs`` (e.g. ``service="gateway", name="fastapi.request"``)."""
        with self.lock:
            return [span for span in self.spans if all(span.get(k) == v for k, v in attrs.items())]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until it holds, or fail listing the spans received."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                with self.lock:
                    seen = sorted({(s["service"], s["name"], s["resource"]) for s in self.spans})
                    errors = list(self.errors)
                raise AssertionError(
                    f"{what} within {timeout_s} s; spans seen: {seen}; decode errors: {errors}"
                )
            time.sleep(0.05)


def _handler(agent: TraceAgent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads ``agent.requests`` instead."""

        def _answer(self, code: int, body: dict[str, Any] | None = None) -> None:
            payload = json.dumps(body or {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            with agent.lock:
                agent.requests.append(("GET", self.path, dict(self.headers)))
            if self.path == "/info":
                self._answer(
                    200,
                    {"version": "7.99.0-fake", "endpoints": ["/v0.4/traces", "/v0.5/traces"], "config": {}},
                )
            else:
                self._answer(404)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with agent.lock:
                agent.requests.append((self.command, self.path, dict(self.headers)))
            endpoint = self.path.strip("/").split("/")[0]
            if self.path.rstrip("/") not in ("/v0.4/traces", "/v0.5/traces"):
                self._answer(202)
                return
            try:
                spans = spans_from_payload(endpoint, body)
            except (MsgpackError, ValueError, KeyError, IndexError, TypeError) as error:
                with agent.lock:
                    agent.errors.append(f"{self.path}: {error!r}")
                self._answer(400)
                return
            with agent.lock:
                agent.spans.extend(spans)
            self._answer(200, {"rate_by_service": {"service:,env:": 1}})

        do_POST = do_PUT

    return Handler


@contextmanager
def running_trace_agent() -> Iterator[TraceAgent]:
    """A fake trace agent on a free 127.0.0.1 port for the duration of the block."""
    agent = TraceAgent(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agent))
    agent.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-trace-agent", daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
