"""Real servers for tests: the Tansu broker and moto_server, started on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pfactory.bus.embedded import EmbeddedBroker, free_port


@contextmanager
def running_tansu(log_dir: Path) -> Iterator[EmbeddedBroker]:
    """A Tansu broker for the duration of the block."""
    broker = EmbeddedBroker(log_path=log_dir / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@contextmanager
def running_moto(log_dir: Path) -> Iterator[str]:
    """A moto_server (S3, DynamoDB, EMR containers emulation); yields its endpoint URL."""
    port = free_port()
    moto_bin = Path(sys.executable).with_name("moto_server")
    log = open(log_dir / "moto.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [str(moto_bin), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"moto_server exited with {process.returncode}; see {log_dir / 'moto.log'}"
                )
            try:
                if _get(f"{endpoint}/moto-api/") < 500:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("moto_server did not answer within 30 s")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def reset_moto(endpoint: str) -> None:
    """Forget every bucket, table and job run moto holds (it keeps state between tests otherwise)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


@contextmanager
def running_asgi(app: Any, *, what: str, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL.

    uvicorn offers no start-up event, so this polls its ``started`` flag against a deadline.
    """
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, name=f"test-{what}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test {what} did not start within {timeout_s:.0f} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
