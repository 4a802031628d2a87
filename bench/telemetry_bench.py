"""Telemetry overhead benchmark: what a metric line and a log line cost the service that writes them.

Issue #8 names no figure; these are the costs a hot path pays, measured in-process:

* one catalog metric emitted (checked against the catalog, formatted, sent over UDP to a listening
  socket on 127.0.0.1, as to a local DogStatsD agent), and the same with nothing listening;
* one check-only emit (``Metrics.disabled()``: what tests and a metrics-off service pay);
* one log record formatted as text and as JSON (``PF_TELEMETRY_JSON_LOGS``), without tracing.

Each figure is the best of ``--repeat`` loops of ``--n`` calls, in microseconds per call. No timed
assertion: the figures are for people.

    uv run python bench/telemetry_bench.py
"""

from __future__ import annotations

import argparse
import logging
import socket
import timeit
from collections.abc import Callable

from pfactory.telemetry import catalog
from pfactory.telemetry.logs import configure_logging
from pfactory.telemetry.metrics import Metrics
from pfactory.telemetry.settings import TelemetrySettings


def _best_us(call: Callable[[], object], n: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=n, repeat=repeat)) / n * 1e6


def _online_emit(metrics: Metrics) -> Callable[[], None]:
    def emit() -> None:
        metrics.emit(
            catalog.SCORING_LATENCY,
            10.8,
            model="credit_default",
            feature_set="credit@3",
            model_version=4,
            mode="online",
        )

    return emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per loop")
    parser.add_argument("--repeat", type=int, default=5, help="loops; the best is reported")
    args = parser.parse_args()

    agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    agent.bind(("127.0.0.1", 0))
    agent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    agent.setblocking(False)
    listening = Metrics(service="scorer-online", port=agent.getsockname()[1])
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    nobody = Metrics(service="scorer-online", port=closed_port)

    rows = [
        ("emit, agent listening (UDP)", _best_us(_online_emit(listening), args.n, args.repeat)),
        ("emit, no agent", _best_us(_online_emit(nobody), args.n, args.repeat)),
        ("emit, metrics off (checks only)", _best_us(_online_emit(Metrics.disabled()), args.n, args.repeat)),
    ]
    agent.close()

    record = logging.LogRecord(
        "pfactory.scorer", logging.INFO, __file__, 1, "scored %s rows of %s", (1500, "x"), None
    )
    for name, json_logs in (("log line, text", False), ("log line, JSON", True)):
        configure_logging(TelemetrySettings(json_logs=json_logs), "scorer", "INFO")
        formatter = logging.getLogger().handlers[0].formatter
        assert formatter is not None
        rows.append((name, _best_us(lambda f=formatter: f.format(record), args.n, args.repeat)))

    width = max(len(name) for name, _ in rows)
    print(f"telemetry overhead, best of {args.repeat} x {args.n:,} calls")
    for name, micros in rows:
        print(f"  {name:<{width}}  {micros:7.2f} us/call")


if __name__ == "__main__":
    main()
