"""The bus metrics on the wire: a consumer given metrics reports each handler attempt by outcome, its
time, dead letters and the group's lag on the topic, for both the inline and the concurrent loop.
Real Tansu broker, real UDP lines."""

from __future__ import annotations

from collections import Counter

import pytest

from pfactory.bus import BusSettings, EventPublisher, build_broker, subscribe
from pfactory.contracts.events import Envelope, JobStatus, JobStatusChanged
from pfactory.telemetry.metrics import Metrics
from tests.bus.helpers import produce_raw, started, wait_until
from tests.utils.statsd import capturing_statsd

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("concurrency", [None, 2])
async def test_handled_retried_dead_lettered_and_lag_reach_the_agent(
    settings: BusSettings, topic: str, concurrency: int | None
) -> None:
    broker = build_broker(settings, service="metrics")
    publisher = EventPublisher(broker, "metrics-test")
    group = f"g-{topic}"
    attempts: Counter[str] = Counter()
    with capturing_statsd() as agent:
        metrics = Metrics(service="metrics-test", port=agent.port)

        @subscribe(
            broker,
            topic,
            group_id=group,
            settings=settings,
            publisher=publisher,
            metrics=metrics,
            concurrency=concurrency,
        )
        async def handle(envelope: Envelope) -> None:
            job = envelope.open_as(JobStatusChanged).job_id
            attempts[job] += 1
            if job == "flaky" and attempts[job] == 1:
                raise ConnectionError("briefly unreachable")
            if job == "broken":
                raise ValueError("never works")

        async with broker:
            for job in ("ok-1", "flaky", "broken", "ok-2"):
                await publisher.publish(JobStatusChanged(job_id=job, status=JobStatus.RUNNING), topic=topic)
        await produce_raw(settings, topic, [b"\xffpoison"])
        async with started(broker):
            await wait_until(
                lambda: (
                    len(agent.named("pf.bus.dead_lettered")) == 2
                    and len(agent.named("pf.bus.handled", outcome="ok")) == 3
                    and any(line.value == 0 for line in agent.named("pf.bus.consumer_lag"))
                ),
                timeout=20,
                what="the bus metrics of five records",
            )

    def outcomes(name: str) -> Counter[str]:
        return Counter(line.tags["outcome"] for line in agent.named(name))

    assert outcomes("pf.bus.handled") == {"ok": 3, "retried": 1, "dead_lettered": 2}
    assert (
        len(agent.named("pf.bus.handler_duration")) == 5
    )  # five handler attempts; the poison never reaches it
    assert {line.tags["partition"] for line in agent.named("pf.bus.consumer_lag")} == {"0"}
    for line in agent.lines:
        assert (line.tags["group"], line.tags["topic"], line.tags["service"]) == (
            group,
            topic,
            "metrics-test",
        )
    lags = [line.value for line in agent.named("pf.bus.consumer_lag")]
    assert lags[-1] == 0 and max(lags) <= 4
    # inline: one sample per committed record; concurrent: one per commit, which may cover several
    assert len(lags) == 5 if concurrency is None else 1 <= len(lags) <= 5
