"""A DogStatsD stand-in: a UDP socket on 127.0.0.1 that keeps every line it receives, parsed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StatsdLine:
    """One DogStatsD line as it came off the wire."""

    raw: str
    name: str
    value: float
    kind: str
    tags: dict[str, str]


def parse_line(raw: str) -> StatsdLine:
    """Parse ``name:value|type[|@rate][|#k:v,...]`` strictly (a malformed line raises)."""
    head, *sections = raw.split("|")
    name, value = head.rsplit(":", 1)
    tags: dict[str, str] = {}
    for section in sections[1:]:
        if section.startswith("#"):
            for tag in section[1:].split(","):
                key, _, tag_value = tag.partition(":")
                assert key not in tags, f"tag {key} twice in {raw!r}"
                tags[key] = tag_value
    return StatsdLine(raw=raw, name=name, value=float(value), kind=sections[0], tags=tags)


@dataclass
class StatsdCapture:
    """Lines received so far; ``port`` is where to send them."""

    port: int
    lines: list[StatsdLine] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str, **tags: str) -> list[StatsdLine]:
        """Lines of metric ``name`` carrying every tag in ``tags``."""
        with self.lock:
            return [
                line
                for line in self.lines
                if line.name == name and all(line.tags.get(k) == v for k, v in tags.items())
            ]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until it holds (or fail, showing the metric names seen)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                with self.lock:
                    names = sorted({line.name for line in self.lines})
                raise AssertionError(f"{what}: not seen within {timeout_s} s; metrics seen: {names}")
            time.sleep(0.05)


@contextmanager
def capturing_statsd() -> Iterator[StatsdCapture]:
    """A UDP listener on a free loopback port for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    capture = StatsdCapture(port=sock.getsockname()[1])
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed = [parse_line(raw) for raw in data.decode().splitlines() if raw]
            with capture.lock:
                capture.lines.extend(parsed)

    thread = threading.Thread(target=receive, name="statsd-capture", daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        stop.set()
        thread.join(2)
        sock.close()
