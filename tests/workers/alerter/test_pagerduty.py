"""The PagerDuty Events API v2 client against a local receiver: bodies, retries, rejections, the rate limit."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from pfactory.alerter.adapters.pagerduty import PagerDutyEvents, pagerduty_dedup_key
from pfactory.alerter.adapters.retry import retry_after_s
from pfactory.alerter.model import Delivery, Link, Page, PagerUnavailable
from pfactory.bus.embedded import free_port
from pfactory.telemetry.metrics import Metrics
from tests.utils.statsd import StatsdCapture
from tests.workers.alerter.conftest import OTHER_KEY, ROUTING_KEY, FakeTime
from tests.workers.alerter.receiver import PAGERDUTY_PATH, EventsReceiver, Reply

KEY = SecretStr(ROUTING_KEY)
REQUESTS = "pf.alerts.pagerduty_requests"


def page(
    dedup_key: str = "validation:credit@3", summary: str = "3 expectations failed on 2024-05-01"
) -> Page:
    return Page(
        dedup_key=dedup_key,
        summary=summary,
        source="materialiser",
        severity="error",
        timestamp=datetime(2024, 5, 2, 6, 0, tzinfo=UTC),
        component="credit",
        group="credit",
        event_class="feature_validation",
        custom_details={"failed": ["amount_not_null"], "ds": "2024-05-01"},
        links=(Link("http://gw.example/v1/jobs/j1", "Job j1"),),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def pager(
    http: httpx.AsyncClient, url: str, statsd: StatsdCapture, fake_time: FakeTime, **options: float
) -> PagerDutyEvents:
    return PagerDutyEvents(
        http,
        base_url=url,
        metrics=Metrics(service="alerter", port=statsd.port),
        client_url="http://console.example",
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        **options,  # type: ignore[arg-type]
    )


def outcomes(statsd: StatsdCapture, total: int) -> Counter[tuple[str, str]]:
    statsd.wait_for(lambda: len(statsd.named(REQUESTS)) >= total, 5, f"{total} PagerDuty request lines")
    lines = statsd.named(REQUESTS, service="alerter")
    assert len(lines) == total, [line.raw for line in lines]
    return Counter((line.tags["action"], line.tags["outcome"]) for line in lines)


async def test_trigger_acknowledge_and_resolve_send_the_documented_bodies(
    http: httpx.AsyncClient, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    client = pager(http, receiver.url, statsd, fake_time)
    long_key = "drift:" + "m" * 300
    assert await client.trigger(page(long_key, summary="x" * 2000), KEY) is Delivery.ACCEPTED
    assert await client.acknowledge(long_key, KEY) is Delivery.ACCEPTED
    assert await client.resolve(long_key, KEY) is Delivery.ACCEPTED

    trigger, ack, resolve = (r.body for r in receiver.pagerduty_attempts())
    sent_key = pagerduty_dedup_key(long_key)
    assert len(sent_key) == 255 and sent_key.startswith("drift:mmm")
    assert trigger["routing_key"] == ROUTING_KEY and trigger["dedup_key"] == sent_key
    payload = trigger["payload"]
    assert len(payload["summary"]) == 1024 and payload["summary"].endswith("…")
    assert (payload["severity"], payload["source"], payload["class"]) == (
        "error",
        "materialiser",
        "feature_validation",
    )
    assert (payload["component"], payload["group"]) == ("credit", "credit")
    assert payload["timestamp"] == "2024-05-02T06:00:00+00:00"
    assert payload["custom_details"] == {"failed": ["amount_not_null"], "ds": "2024-05-01"}
    assert trigger["links"] == [{"href": "http://gw.example/v1/jobs/j1", "text": "Job j1"}]
    assert (trigger["client"], trigger["client_url"]) == ("Prediction Factory", "http://console.example")
    assert ack == {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": sent_key}
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": sent_key}
    assert outcomes(statsd, 3) == {
        ("trigger", "accepted"): 1,
        ("acknowledge", "accepted"): 1,
        ("resolve", "accepted"): 1,
    }
    assert fake_time.sleeps == []


async def test_a_429_is_retried_after_its_retry_after_then_accepted(
    http: httpx.AsyncClient, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    receiver.script(PAGERDUTY_PATH, Reply(429, None, {"Retry-After": "7"}))
    client = pager(http, receiver.url, statsd, fake_time)

    assert await client.trigger(page(), KEY) is Delivery.ACCEPTED

    assert [r.status for r in receiver.pagerduty_attempts()] == [429, 202]
    assert fake_time.sleeps == [7.0]
    assert outcomes(statsd, 2) == {("trigger", "retried"): 1, ("trigger", "accepted"): 1}


async def test_5xx_backs_off_exponentially_and_a_long_retry_after_is_capped(
    http: httpx.AsyncClient, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    receiver.script(PAGERDUTY_PATH, Reply(500), Reply(503), Reply(429, None, {"Retry-After": "3600"}))
    client = pager(http, receiver.url, statsd, fake_time, retry_after_max_s=60)

    assert await client.resolve("k", KEY) is Delivery.ACCEPTED

    assert [r.status for r in receiver.pagerduty_attempts()] == [500, 503, 429, 202]
    assert fake_time.sleeps == [0.5, 1.0, 60.0]


async def test_attempts_are_bounded_then_the_event_is_dropped_for_the_bus_to_retry(
    http: httpx.AsyncClient, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    receiver.script(PAGERDUTY_PATH, *[Reply(502)] * 5)
    client = pager(http, receiver.url, statsd, fake_time, max_attempts=5)

    with pytest.raises(PagerUnavailable, match=r"in 5 attempts \(last: HTTP 502"):
        await client.trigger(page(), KEY)

    assert len(receiver.pagerduty_attempts()) == 5
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert outcomes(statsd, 5) == {("trigger", "retried"): 4, ("trigger", "dropped"): 1}


async def test_connection_errors_are_retried(
    http: httpx.AsyncClient, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    client = pager(http, f"http://127.0.0.1:{free_port()}", statsd, fake_time, max_attempts=3)

    with pytest.raises(PagerUnavailable, match=r"ConnectError"):
        await client.trigger(page(), KEY)

    assert fake_time.sleeps == [0.5, 1.0]
    assert outcomes(statsd, 3) == {("trigger", "retried"): 2, ("trigger", "dropped"): 1}


async def test_a_400_is_rejected_once_and_logged_with_pagerdutys_answer(
    http: httpx.AsyncClient,
    receiver: EventsReceiver,
    statsd: StatsdCapture,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"],
    }
    receiver.script(PAGERDUTY_PATH, Reply(400, answer))
    client = pager(http, receiver.url, statsd, fake_time)

    with caplog.at_level(logging.ERROR, logger="pfactory.alerter.pagerduty"):
        assert await client.trigger(page(), KEY) is Delivery.REJECTED

    assert len(receiver.pagerduty_attempts()) == 1 and fake_time.sleeps == []
    assert "rejected trigger validation:credit@3 with HTTP 400 (not retried)" in caplog.text
    assert "Length of 'routing_key' is incorrect" in caplog.text
    assert ROUTING_KEY not in caplog.text
    assert outcomes(statsd, 1) == {("trigger", "rejected"): 1}


async def test_without_a_routing_key_nothing_is_sent_and_it_says_would_page(
    http: httpx.AsyncClient,
    receiver: EventsReceiver,
    statsd: StatsdCapture,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = pager(http, receiver.url, statsd, fake_time)
    with caplog.at_level(logging.INFO, logger="pfactory.alerter.pagerduty"):
        assert await client.trigger(page(), None) is Delivery.DISABLED
    assert receiver.pagerduty_attempts() == []
    assert "would page" in caplog.text and "validation:credit@3" in caplog.text
    assert outcomes(statsd, 1) == {("trigger", "dropped"): 1}


async def test_the_rate_limit_spaces_events_per_routing_key(
    receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    sent_at: list[tuple[str, float]] = []

    async def note(request: httpx.Request) -> None:
        sent_at.append((json.loads(request.content)["routing_key"][:4], fake_time.now))

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as http:
        client = pager(http, receiver.url, statsd, fake_time, rate_per_minute=60, burst=3, rate_max_wait_s=30)
        for index in range(8):
            await client.trigger(page(f"k{index}"), KEY)
        await client.trigger(page("other"), SecretStr(OTHER_KEY))

    times = [at - 1000.0 for key, at in sent_at if key == ROUTING_KEY[:4]]
    # a burst of 3 at once, then one a second: 60 a minute
    assert times == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for start in times:  # never more than burst + rate * window in any window
        assert sum(1 for t in times if start <= t < start + 2.0) <= 3 + 2
    # another routing key has its own bucket: no wait
    assert sent_at[-1] == (OTHER_KEY[:4], 1005.0)
    assert len(receiver.pagerduty()) == 9


async def test_an_event_the_rate_limit_would_hold_too_long_is_dropped_not_sent(
    http: httpx.AsyncClient, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> None:
    client = pager(http, receiver.url, statsd, fake_time, rate_per_minute=60, burst=1, rate_max_wait_s=0.5)
    assert await client.trigger(page("a"), KEY) is Delivery.ACCEPTED
    with pytest.raises(PagerUnavailable, match=r"rate limit \(60/min per routing key"):
        await client.trigger(page("b"), KEY)
    assert [b["dedup_key"] for b in receiver.pagerduty()] == ["a"]
    assert fake_time.sleeps == []
    fake_time.now += 1.0  # a second later the bucket has a token again
    assert await client.trigger(page("b"), KEY) is Delivery.ACCEPTED
    assert outcomes(statsd, 3) == {("trigger", "accepted"): 2, ("trigger", "dropped"): 1}


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)
    request = httpx.Request("POST", "http://x")

    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value}, request=request)

    assert retry_after_s(answer("12"), now) == 12.0
    assert retry_after_s(answer(format_datetime(now + timedelta(seconds=30), usegmt=True)), now) == 30.0
    assert retry_after_s(answer("soon"), now) is None
    assert retry_after_s(httpx.Response(429, request=request), now) is None
