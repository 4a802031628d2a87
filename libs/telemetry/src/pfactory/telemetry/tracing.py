"""ddtrace APM for a service process: the only module that imports ddtrace, and only when tracing is on.

ddtrace reads its configuration from ``DD_*`` environment variables when it is first imported,
so :func:`configure_tracing` sets them from the settings and then imports it. Integrations
traced: FastAPI, aiokafka, botocore (and aiobotocore), httpx, plus the stdlib logging
integration that puts ``dd.trace_id``/``dd.span_id`` on every log record.

With no agent listening, ddtrace's writer drops the spans and would log an error a minute;
those "failed to send" lines are filtered out unless ``DD_TRACE_DEBUG`` is on (the agent
answering with an error status is still logged).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from urllib.parse import urlparse

from pfactory.telemetry.settings import TelemetrySettings

log = logging.getLogger(__name__)

INTEGRATIONS = ("fastapi", "aiokafka", "botocore", "aiobotocore", "httpx", "logging")
_WRITER_LOGGER = "ddtrace.internal.writer.writer"

# Defaults an operator may override in the environment.
_DEFAULT_ENV = {
    # ddtrace's own logs go through the root logger (our format), not a second stderr handler
    "DD_TRACE_LOG_STREAM_HANDLER": "false",
    # integration spans (kafka, aws, http clients) keep the service's name; the peer is peer.service
    "DD_TRACE_REMOVE_INTEGRATION_SERVICE_NAMES_ENABLED": "true",
    "DD_LOGS_INJECTION": "true",
}


class TracingError(RuntimeError):
    """Tracing cannot be configured as asked."""


@dataclass(frozen=True)
class _Configured:
    service: str
    env: str
    version: str
    agent_url: str


_configured: _Configured | None = None


def configure_tracing(settings: TelemetrySettings, service: str) -> bool:
    """Turn ddtrace on for this process when ``settings.tracing_enabled``; once per process.

    Args:
        settings: the process's telemetry settings (``tracing_enabled``, ``env``, ``version``,
            ``trace_agent_url``).
        service: the Datadog ``service`` of every span (unified service tagging).

    Returns:
        Whether tracing is on. When it is off, ddtrace is not imported.

    Raises:
        TracingError: the agent URL is not http(s)/unix, or tracing was already configured in
            this process with another service, env, version or agent.
    """
    global _configured
    wanted = _Configured(service, settings.env, settings.version, settings.trace_agent_url)
    if _configured is not None:
        if settings.tracing_enabled and wanted != _configured:
            raise TracingError(
                f"tracing is already on in this process as {_configured}; ddtrace is configured once per "
                f"process, so {wanted} cannot apply; configure it once, at the entry point"
            )
        return True
    if not settings.tracing_enabled:
        return False
    scheme = urlparse(settings.trace_agent_url).scheme
    if scheme not in ("http", "https", "unix"):
        raise TracingError(
            f"trace_agent_url {settings.trace_agent_url!r} is not an http(s):// or unix:// URL; "
            "set PF_TELEMETRY_TRACE_AGENT_URL to the agent's trace intake, e.g. http://127.0.0.1:8126"
        )
    already_imported = "ddtrace" in sys.modules
    os.environ.update(
        DD_SERVICE=service,
        DD_ENV=settings.env,
        DD_VERSION=settings.version,
        DD_TRACE_AGENT_URL=settings.trace_agent_url,
        DD_TRACE_ENABLED="true",
    )
    for name, value in _DEFAULT_ENV.items():
        os.environ.setdefault(name, value)
    logging.getLogger(_WRITER_LOGGER).addFilter(_drop_unreachable_agent)

    import ddtrace
    from ddtrace.trace import tracer

    if already_imported:
        # Something (mlflow's plugin entry point, a test runner) imported ddtrace before us,
        # so it read the environment too early: apply the settings to the live objects.
        ddtrace.config.service = service
        ddtrace.config.env = settings.env
        ddtrace.config.version = settings.version
        tracer.enabled = True
        # ddtrace 4 has no public way to re-point a live tracer: set the writer's URL, rebuild it
        tracer._agent_url = settings.trace_agent_url
        tracer._recreate()
        _remove_ddtrace_stream_handlers()
    ddtrace.patch(raise_errors=False, **dict.fromkeys(INTEGRATIONS, True))
    _configured = wanted
    log.info(
        "tracing on: service=%s env=%s version=%s agent=%s",
        service,
        settings.env,
        settings.version,
        settings.trace_agent_url,
    )
    return True


def _drop_unreachable_agent(record: logging.LogRecord) -> bool:
    """Keep ddtrace's writer records except "failed to send" when no agent answered at all."""
    if not str(record.msg).startswith("failed to send"):
        return True
    if logging.getLogger(_WRITER_LOGGER).isEnabledFor(logging.DEBUG):
        return True
    # An HTTP status means an agent answered and refused the payload: that is worth a line.
    return "Error code:" in record.getMessage()


def _remove_ddtrace_stream_handlers() -> None:
    ddtrace_logger = logging.getLogger("ddtrace")
    for handler in ddtrace_logger.handlers[:]:
        if type(handler) is logging.StreamHandler:
            ddtrace_logger.removeHandler(handler)
