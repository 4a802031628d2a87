"""A local stand-in for PagerDuty's Events API v2 and Datadog's events API, checking every body.

Bodies are checked against the documented schemas (PagerDuty:
https://developer.pagerduty.com/docs/events-api-v2/trigger-events/, Datadog:
https://docs.datadoghq.com/api/latest/events/#post-an-event). A body that breaks them is answered
400 the way PagerDuty does and recorded in ``problems``; the fixture fails the test when any were.
Answers can be scripted per path (202, 429 with Retry-After, 500, 400, ...); unscripted requests get 202.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGERDUTY_PATH = "/v2/enqueue"
DATADOG_PATH = "/api/v1/events"
DATADOG_KEY = "dd-test-api-key"

_PD_TOP = {"routing_key", "event_action", "dedup_key", "payload", "links", "images", "client", "client_url"}
_PD_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
_PD_SEVERITIES = {"critical", "error", "warning", "info"}
_PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
_DD_TOP = {
    "title",
    "text",
    "alert_type",
    "aggregation_key",
    "tags",
    "source_type_name",
    "date_happened",
    "priority",
    "host",
    "related_event_id",
    "device_name",
}
_DD_ALERT_TYPES = {"error", "warning", "info", "success", "user_update", "recommendation", "snapshot"}


def _string(value: Any, name: str, problems: list[str], *, low: int = 1, high: int | None = None) -> None:
    if not isinstance(value, str):
        problems.append(f"{name} must be a string, got {type(value).__name__}")
    elif len(value) < low or (high is not None and len(value) > high):
        problems.append(f"{name} has {len(value)} characters, allowed {low}..{high}")


def _url(value: Any, name: str, problems: list[str]) -> None:
    _string(value, name, problems)
    if isinstance(value, str) and not value.startswith(("http://", "https://")):
        problems.append(f"{name} {value!r} is not an http(s) URL")


def pagerduty_problems(body: Any) -> list[str]:
    """What breaks the Events API v2 schema in ``body`` (empty: valid)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems += [f"unknown field {key!r}" for key in sorted(set(body) - _PD_TOP)]
    _string(body.get("routing_key"), "routing_key", problems, low=32, high=32)
    action = body.get("event_action")
    if action not in _PD_ACTIONS:
        problems.append(f"event_action {action!r} is not one of {sorted(_PD_ACTIONS)}")
    if "dedup_key" in body or action != "trigger":
        _string(body.get("dedup_key"), "dedup_key", problems, high=255)
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "payload is required for a trigger and must be an object"]
        problems += [f"unknown payload field {key!r}" for key in sorted(set(payload) - _PD_PAYLOAD)]
        _string(payload.get("summary"), "payload.summary", problems, high=1024)
        _string(payload.get("source"), "payload.source", problems)
        if payload.get("severity") not in _PD_SEVERITIES:
            problems.append(
                f"payload.severity {payload.get('severity')!r} is not one of {sorted(_PD_SEVERITIES)}"
            )
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                problems.append(f"payload.timestamp {payload['timestamp']!r} is not ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload:
                _string(payload[name], f"payload.{name}", problems)
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("payload.custom_details must be an object")
        for index, link in enumerate(body.get("links", [])):
            if not isinstance(link, dict) or set(link) - {"href", "text"}:
                problems.append(f"links[{index}] must be an object of href and text")
                continue
            _url(link.get("href"), f"links[{index}].href", problems)
            if "text" in link:
                _string(link["text"], f"links[{index}].text", problems)
        for index, image in enumerate(body.get("images", [])):
            if not isinstance(image, dict) or set(image) - {"src", "href", "alt"}:
                problems.append(f"images[{index}] must be an object of src, href and alt")
                continue
            _url(image.get("src"), f"images[{index}].src", problems)
        if "client" in body:
            _string(body["client"], "client", problems)
        if "client_url" in body:
            _url(body["client_url"], "client_url", problems)
    return problems


def datadog_problems(body: Any, api_key: str | None) -> list[str]:
    """What breaks Datadog's POST /api/v1/events schema in ``body`` or its key header (empty: valid)."""
    problems: list[str] = []
    if api_key != DATADOG_KEY:
        problems.append(f"DD-API-KEY header is {api_key!r}")
    if not isinstance(body, dict):
        return [*problems, "the body must be a JSON object"]
    problems += [f"unknown field {key!r}" for key in sorted(set(body) - _DD_TOP)]
    _string(body.get("title"), "title", problems, high=100)
    _string(body.get("text"), "text", problems, low=0, high=4000)
    if body.get("alert_type") not in _DD_ALERT_TYPES:
        problems.append(f"alert_type {body.get('alert_type')!r} is not one of {sorted(_DD_ALERT_TYPES)}")
    if "aggregation_key" in body:
        _string(body["aggregation_key"], "aggregation_key", problems, high=100)
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        problems.append("tags must be a list of strings")
    if "date_happened" in body and not isinstance(body["date_happened"], int):
        problems.append("date_happened must be an integer (epoch seconds)")
    return problems


@dataclass(frozen=True)
class Reply:
    """A scripted answer."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as the receiver took it, and what it answered."""

    path: str
    body: Any
    status: int


@dataclass
class EventsReceiver:
    """The running receiver: its URL, what it received, the schema problems it found."""

    url: str
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    scripts: dict[str, deque[Reply]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order (then 202 again)."""
        with self.lock:
            self.scripts.setdefault(path, deque()).extend(replies)

    def pagerduty(self, dedup_key: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """PagerDuty bodies it accepted (202), optionally of one dedup key and action."""
        with self.lock:
            bodies = [r.body for r in self.received if r.path == PAGERDUTY_PATH and r.status == 202]
        return [
            body
            for body in bodies
            if (dedup_key is None or body.get("dedup_key") == dedup_key)
            and (action is None or body.get("event_action") == action)
        ]

    def pagerduty_attempts(self) -> list[Received]:
        """Every request to the PagerDuty path, whatever was answered."""
        with self.lock:
            return [r for r in self.received if r.path == PAGERDUTY_PATH]

    def datadog(self, aggregation_key: str | None = None) -> list[dict[str, Any]]:
        """Datadog bodies it accepted, optionally of one aggregation key."""
        with self.lock:
            bodies = [r.body for r in self.received if r.path == DATADOG_PATH and r.status == 202]
        return [b for b in bodies if aggregation_key is None or b.get("aggregation_key") == aggregation_key]


def _handler(receiver: EventsReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = None
            if self.path == PAGERDUTY_PATH:
                problems = pagerduty_problems(body)
            elif self.path == DATADOG_PATH:
                problems = datadog_problems(body, self.headers.get("DD-API-KEY"))
            else:
                problems = [f"no such path {self.path}"]
            with receiver.lock:
                scripted = receiver.scripts.get(self.path)
                reply = scripted.popleft() if scripted else None
                if problems:
                    receiver.problems += [f"{self.path}: {problem}" for problem in problems]
                    reply = Reply(
                        400,
                        {"status": "invalid event", "message": "Event object is invalid", "errors": problems},
                    )
                elif reply is None:
                    accepted = {"status": "success", "message": "Event processed"}
                    if self.path == PAGERDUTY_PATH:
                        accepted["dedup_key"] = body.get("dedup_key", "")
                    reply = Reply(202, accepted if self.path == PAGERDUTY_PATH else {"status": "ok"})
                receiver.received.append(Received(self.path, body, reply.status))
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_receiver() -> Iterator[EventsReceiver]:
    """The receiver on a free loopback port for the duration of the block."""
    receiver = EventsReceiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="events-receiver", daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
