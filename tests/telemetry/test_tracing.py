"""ddtrace APM: spans reach the agent with unified tags, JSON logs carry their trace ids, no agent = no noise.

The Datadog agent cannot run here: ``tests/utils/trace_agent.py`` implements its documented trace
intake (MessagePack v0.4/v0.5 over HTTP) and keeps what the real tracer, in the real gateway
process, sends it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pfactory.bus.embedded import free_port
from pfactory.bus.settings import BusSettings
from pfactory.gateway.auth import new_api_key
from pfactory.telemetry.settings import TelemetrySettings
from pfactory.telemetry.tracing import TracingError, configure_tracing
from tests.utils.trace_agent import TraceAgent, full_trace_id, running_trace_agent, unpackb

ROOT = Path(__file__).resolve().parents[2]
TAGS = {"PF_TELEMETRY_ENV": "citest", "PF_TELEMETRY_VERSION": "7.7.7"}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PF_", "DD_", "_DD_"))}


@dataclass
class Gateway:
    """A gateway started with ``python -m pfactory.gateway``."""

    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path
    stdout_path: Path

    def stop(self) -> float:
        """SIGTERM it and wait; how long it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        return time.monotonic() - started

    def output(self) -> str:
        """stderr then stdout, as written so far."""
        return self.stderr_path.read_text(errors="replace") + self.stdout_path.read_text(errors="replace")


@contextmanager
def running_gateway(tmp_path: Path, env: Mapping[str, str]) -> Iterator[Gateway]:
    """The real gateway process on a free port with ``env`` added; stopped (SIGTERM) afterwards."""
    port = free_port()
    full_env = {
        **_clean_env(),
        "PF_GATEWAY_HOST": "127.0.0.1",
        "PF_GATEWAY_PORT": str(port),
        "PF_GATEWAY_DATA_DIR": str(tmp_path / "gateway"),
        "PF_TELEMETRY_METRICS_ENABLED": "false",
        **env,
    }
    stderr_path, stdout_path = tmp_path / "gateway.stderr", tmp_path / "gateway.stdout"
    with stderr_path.open("wb") as err, stdout_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pfactory.gateway"], stdout=out, stderr=err, env=full_env, cwd=tmp_path
        )
    gateway = Gateway(process, f"http://127.0.0.1:{port}", stderr_path, stdout_path)
    try:
        deadline = time.monotonic() + 30
        while _status(f"{gateway.url}/health") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not answer /health; its output:\n{gateway.output()}")
            time.sleep(0.05)
        yield gateway
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _status(url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def _log_id(trace_id: int) -> str:
    """How Datadog's log correlation spells a trace id: 128-bit ids in 32 hex digits, else decimal."""
    return f"{trace_id:032x}" if trace_id >= 1 << 64 else str(trace_id)


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        assert line.startswith("{"), f"a log line that is not JSON: {line!r}"
    return [json.loads(line) for line in lines]


def _ddtrace_complaints(text: str) -> list[str]:
    """Warnings and errors from ddtrace, and its writer's complaint in any form."""
    levels = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    return [
        line
        for line in text.splitlines()
        if ("ddtrace" in line and any(level in line for level in levels)) or "failed to send" in line
    ]


@pytest.mark.integration
def test_gateway_spans_reach_the_agent_tagged_and_json_logs_carry_their_trace_ids(
    tmp_path: Path, bus_settings: BusSettings
) -> None:
    api_key = new_api_key()[0]
    with running_trace_agent() as agent:
        env = {
            **TAGS,
            "PF_TELEMETRY_TRACING_ENABLED": "1",
            "PF_TELEMETRY_JSON_LOGS": "1",
            "PF_TELEMETRY_TRACE_AGENT_URL": agent.url,
            "PF_GATEWAY_BOOTSTRAP_ADMIN_KEY": api_key,
            "PF_BUS_BOOTSTRAP_SERVERS": bus_settings.bootstrap_servers,
            "PF_BUS_CLIENT_ID": bus_settings.client_id,
        }
        with running_gateway(tmp_path, env) as gateway:
            assert _status(f"{gateway.url}/health") == 200
            alert = {"dedup_key": "airflow:pf_trace_test", "check": "scoring_dag", "severity": "warning"}
            alert |= {"summary": "tracing test"}
            posted = _status(
                f"{gateway.url}/v1/alerts",
                data=json.dumps(alert).encode(),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            )
            assert posted == 202, gateway.output()
            agent.wait_for(lambda: _health_span(agent) is not None, 15, "no FastAPI span of GET /health")
            agent.wait_for(lambda: bool(_kafka_spans(agent)), 15, "no aiokafka span")
            gateway.stop()
        output = gateway.output()

    health = _health_span(agent)
    assert health is not None
    for span in (health, *_kafka_spans(agent)):
        assert span["service"] == "gateway", span
        assert (span["meta"].get("env"), span["meta"].get("version")) == ("citest", "7.7.7"), span
    assert not agent.errors
    assert {path for method, path, _ in agent.requests if method in ("PUT", "POST")} >= {"/v0.5/traces"}

    records = _json_lines(output)  # every line the process wrote is one JSON object
    assert all(
        r["service"] == "gateway" and r["env"] == "citest" and r["version"] == "7.7.7" for r in records
    )
    health_id = _log_id(full_trace_id(health))
    correlated = [r for r in records if r.get("dd.trace_id") == health_id]
    assert correlated, f"no log line carries the /health span's trace id {health_id}: {records}"
    assert any("GET /health" in r["message"] for r in correlated), correlated
    spans_of_trace = {str(s["span_id"]) for s in agent.spans if full_trace_id(s) == full_trace_id(health)}
    assert all(r["dd.span_id"] in spans_of_trace for r in correlated), (correlated, spans_of_trace)
    assert not _ddtrace_complaints(output), output


def _health_span(agent: TraceAgent) -> dict[str, Any] | None:
    spans = [
        s for s in agent.spans if s["meta"].get("component") == "fastapi" and s["resource"] == "GET /health"
    ]
    return spans[0] if spans else None


def _kafka_spans(agent: TraceAgent) -> list[dict[str, Any]]:
    return [s for s in agent.spans if s["meta"].get("component") == "aiokafka"]


def test_a_gateway_with_tracing_on_and_no_agent_says_nothing_about_it(tmp_path: Path) -> None:
    with _dead_agent() as (agent_url, accepted):  # answers nothing, as when no agent runs
        env = {
            **TAGS,
            "PF_TELEMETRY_TRACING_ENABLED": "1",
            "PF_TELEMETRY_TRACE_AGENT_URL": agent_url,
            "PF_GATEWAY_BUS_ENABLED": "false",
            "DD_TRACE_WRITER_INTERVAL_SECONDS": "0.2",
        }
        with running_gateway(tmp_path, env) as gateway:
            for _ in range(5):
                assert _status(f"{gateway.url}/health") == 200
            # silence proves something only once the writer has tried and failed: wait for two attempts
            assert accepted.wait_for(2, timeout_s=30), (
                f"the tracer never tried to send its spans ({accepted.count} connections)"
            )
            gateway.stop()
    output = gateway.output()
    assert "tracing on: service=gateway" in output, output
    assert not _ddtrace_complaints(output), output


class _Connections:
    """How many connections the dead agent accepted; a test can wait for a number of them."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def add(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """True once ``count`` connections were accepted; False if ``timeout_s`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, timeout=timeout_s)


@contextmanager
def _dead_agent() -> Iterator[tuple[str, _Connections]]:
    """A port that accepts connections and closes them unanswered; yields its URL and the connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted = _Connections()
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()
            accepted.add()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


SPANS_SCRIPT = textwrap.dedent(
    """
    import sys
    from pfactory.telemetry.logs import configure_logging
    from pfactory.telemetry.settings import TelemetrySettings
    from pfactory.telemetry.tracing import configure_tracing

    settings = TelemetrySettings(tracing_enabled=True, trace_agent_url=sys.argv[1], env="citest", version="7.7.7")
    configure_logging(settings, "probe", "INFO")
    assert configure_tracing(settings, "probe")
    from ddtrace.trace import tracer

    for index in range(3):
        with tracer.trace("probe.work", resource=f"r{index}"):
            pass
    tracer.flush()
    """
)


def test_the_writer_complaint_about_an_unanswering_agent_shows_only_with_ddtrace_debug() -> None:
    """Silence proves something only if the tracer tried: the dead agent counts its connections.

    With ``DD_TRACE_DEBUG`` (a closed port) the same complaint is logged, so the silence is the
    filter's doing and an operator can still see why spans are missing. Both run at once.
    """
    with _dead_agent() as (url, accepted):
        quiet = subprocess.Popen(
            [sys.executable, "-c", SPANS_SCRIPT, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**_clean_env(), "DD_TRACE_WRITER_INTERVAL_SECONDS": "0.2"},
        )
        debug = subprocess.Popen(
            [sys.executable, "-c", SPANS_SCRIPT, f"http://127.0.0.1:{free_port()}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**_clean_env(), "DD_TRACE_DEBUG": "true"},
        )
        quiet_output = quiet.communicate(timeout=60)[0].decode()
        debug_output = debug.communicate(timeout=60)[0].decode()
    assert quiet.returncode == 0, quiet_output
    assert accepted.count >= 1, "the tracer never tried to send, so its silence proves nothing"
    assert not _ddtrace_complaints(quiet_output), quiet_output
    assert debug.returncode == 0, debug_output[-3000:]
    assert "failed to send" in debug_output, debug_output[-3000:]


def test_tracing_off_never_imports_ddtrace(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pfactory.bus.app import configure_process
        from pfactory.telemetry.logs import configure_logging
        from pfactory.telemetry.settings import TelemetrySettings
        from pfactory.telemetry.tracing import configure_tracing
        from pfactory.gateway.settings import GatewaySettings

        settings = TelemetrySettings()
        configure_logging(settings, "gateway", "INFO")
        assert configure_tracing(settings, "gateway") is False
        assert configure_process(GatewaySettings().telemetry, "gateway", "INFO") is False
        import pfactory.gateway.app
        print(sorted(name for name in sys.modules if name.split(".")[0] == "ddtrace"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        env={**_clean_env(), "PF_TELEMETRY_TRACING_ENABLED": "0"},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "[]"


def test_ddtrace_imported_before_configuration_still_reports_as_the_service() -> None:
    """mlflow's plugin entry point or a test runner may import ddtrace first; the settings still win."""
    script = textwrap.dedent(
        """
        import sys
        import ddtrace  # imported early, with none of the DD_* variables set
        from pfactory.telemetry.settings import TelemetrySettings
        from pfactory.telemetry.tracing import TracingError, configure_tracing

        settings = TelemetrySettings(
            tracing_enabled=True, trace_agent_url=sys.argv[1], env="citest", version="7.7.7"
        )
        assert configure_tracing(settings, "late") is True
        assert configure_tracing(settings, "late") is True  # once per process: a repeat is a no-op
        try:
            configure_tracing(settings, "another")
        except TracingError as error:
            print("refused:", error)
        from ddtrace.trace import tracer

        with tracer.trace("late.work"):
            pass
        tracer.flush()
        """
    )
    with running_trace_agent() as agent:
        done = subprocess.run(
            [sys.executable, "-c", script, agent.url],
            capture_output=True,
            env=_clean_env(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        agent.wait_for(lambda: bool(agent.matching(name="late.work")), 10, "no late.work span")
    span = agent.matching(name="late.work")[0]
    assert span["service"] == "late"
    assert (span["meta"].get("env"), span["meta"].get("version")) == ("citest", "7.7.7")
    assert "refused: tracing is already on in this process" in done.stdout.decode()


def test_configuration_errors_are_explained() -> None:
    assert configure_tracing(TelemetrySettings(tracing_enabled=False), "gateway") is False
    with pytest.raises(TracingError, match="not an http"):
        configure_tracing(
            TelemetrySettings(tracing_enabled=True, trace_agent_url="127.0.0.1:8126"), "gateway"
        )


def test_the_agent_stand_in_decodes_what_ddtrace_encodes() -> None:
    from ddtrace.internal._encoding import packb

    values: list[Any] = [
        "a" * 31,
        "a" * 32,
        "é" * 40_000,
        list(range(70_000)),
        {"k": -5, "big": 2**64 - 1, "neg": -(2**40), "f": 1.5, "t": True, "n": None},
        {str(i): i for i in range(20)},
        b"\x00\xff",
    ]
    for value in values:
        assert unpackb(packb(value)) == value
