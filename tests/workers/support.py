"""Helpers for the worker tests: run a worker as its real process, publish to and read from Tansu."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownError

from pfactory.bus.embedded import free_port
from pfactory.bus.reading import read_envelopes
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import Envelope, Event


@dataclass
class WorkerProcess:
    """A worker started with ``python -m``; its health endpoints are on ``url``."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    group_id: str

    def log(self) -> str:
        """Everything the worker wrote so far."""
        return self.log_path.read_text(errors="replace")


def http_status(url: str) -> int | None:
    """GET ``url``; its status, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, log: Callable[[], str]) -> None:
    """Poll ``condition`` until true or fail after ``timeout_s`` with the worker's log."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s; worker log:\n{log()[-4000:]}")
        time.sleep(0.05)


@contextmanager
def running_worker(
    name: str,
    settings: BusSettings,
    log_dir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    group_id: str | None = None,
) -> Iterator[WorkerProcess]:
    """Run ``python -m pfactory.<name>`` against the test broker with its own consumer group.

    ``extra_env`` adds or overrides environment variables; ``group_id`` reuses a consumer group
    (e.g. to restart a worker and see the records its predecessor left uncommitted).
    """
    port = free_port()
    group_id = group_id or f"test-{name}-{uuid.uuid4().hex[:8]}"
    prefix = f"PF_{name.upper()}_"
    env = {
        **os.environ,
        "PF_BUS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PF_BUS_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "PF_BUS_HEARTBEAT_INTERVAL_MS": str(settings.heartbeat_interval_ms),
        "PF_BUS_FETCH_MAX_WAIT_MS": "100",  # Tansu holds a waiting fetch to its deadline
        f"{prefix}HEALTH_PORT": str(port),
        f"{prefix}GROUP_ID": group_id,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"pfactory.{name}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    worker = WorkerProcess(process, f"http://127.0.0.1:{port}", log_path, group_id)
    try:
        yield worker
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def publish(settings: BusSettings, event: Event, *, producer: str = "test") -> Envelope:
    """Publish one event in its envelope to its topic (keyed like the platform's publisher)."""
    envelope = Envelope.wrap(event, producer=producer)
    client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await client.start()
    try:
        key = event.partition_key()
        for attempt in range(4):  # Tansu may answer UnknownError to a partition's first write after a restart
            try:
                await client.send_and_wait(
                    event.TOPIC, envelope.to_bytes(), key=key.encode() if key else None
                )
                break
            except UnknownError:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
    finally:
        await client.stop()
    return envelope


async def collect(
    settings: BusSettings, topic: str, keep: Callable[[Envelope], bool], *, count: int, timeout_s: float
) -> list[Envelope]:
    """Read ``topic`` from the beginning until ``count`` envelopes pass ``keep`` (or fail at the deadline)."""
    seen = await read_envelopes(settings, topic, keep=keep, count=count, timeout_s=timeout_s)
    found = [item.envelope for item in seen]
    if len(found) < count:
        raise AssertionError(f"saw {len(found)} of {count} expected envelopes on {topic}: {found}")
    return found
