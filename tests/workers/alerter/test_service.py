"""The router's decisions with its real adapters: SQLite state, PagerDuty and Datadog clients on a receiver."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pfactory.alerter.adapters.datadog import DatadogEvents
from pfactory.alerter.adapters.pagerduty import PagerDutyEvents
from pfactory.alerter.adapters.sqlite import SqliteIncidentStore
from pfactory.alerter.model import Action, PagerUnavailable
from pfactory.alerter.routing import load_routes
from pfactory.alerter.service import AlertRouter, Outcome
from pfactory.contracts.events import AlertRaised, AlertResolved, Severity
from pfactory.telemetry.metrics import Metrics
from tests.utils.statsd import StatsdCapture
from tests.workers.alerter.conftest import ROUTING_KEY, FakeTime
from tests.workers.alerter.receiver import DATADOG_KEY, PAGERDUTY_PATH, EventsReceiver, Reply

AT = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)
ALERTS = "pf.alerts.events"

MakeRouter = Callable[..., AlertRouter]


def raised(key: str, **fields: Any) -> AlertRaised:
    values: dict[str, Any] = {
        "dedup_key": key,
        "check": "feature_validation",
        "severity": Severity.ERROR,
        "summary": "3 expectations failed on credit_features 2024-05-01",
        "source": "materialiser",
        "feature_set_name": "credit_features",
    }
    values.update(fields)
    return AlertRaised(**values)


def resolved(key: str, check: str = "feature_validation") -> AlertResolved:
    return AlertResolved(dedup_key=key, check=check, source="materialiser", summary="validation passed again")


def eid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def make_router(
    tmp_path: Path, receiver: EventsReceiver, statsd: StatsdCapture, fake_time: FakeTime
) -> AsyncIterator[MakeRouter]:
    http = httpx.AsyncClient(timeout=5)
    stores: list[SqliteIncidentStore] = []

    def make(
        routes: str | None = None,
        routing_key: str | None = ROUTING_KEY,
        datadog: bool = True,
        max_attempts: int = 5,
    ) -> AlertRouter:
        routes_file = None
        if routes is not None:
            routes_file = tmp_path / f"routes-{uuid.uuid4().hex[:6]}.yaml"
            routes_file.write_text(routes)
        metrics = Metrics(service="alerter", port=statsd.port)
        store = SqliteIncidentStore(tmp_path / "state" / "incidents.sqlite3")
        stores.append(store)
        pager = PagerDutyEvents(
            http,
            base_url=receiver.url,
            metrics=metrics,
            max_attempts=max_attempts,
            clock=fake_time.clock,
            sleep=fake_time.sleep,
        )
        notifier = (
            DatadogEvents(http, api_url=receiver.url, api_key=SecretStr(DATADOG_KEY), sleep=fake_time.sleep)
            if datadog
            else None
        )
        table = load_routes(routes_file, SecretStr(routing_key) if routing_key else None)
        return AlertRouter(
            table, store, pager, notifier, metrics, gateway_url="http://gw.example", env="test"
        )

    yield make
    for store in stores:
        store.close()
    await http.aclose()


def alert_lines(
    statsd: StatsdCapture, total: int, check: str = "feature_validation"
) -> Counter[tuple[str, str]]:
    statsd.wait_for(lambda: len(statsd.named(ALERTS, check=check)) >= total, 5, f"{total} alert lines")
    lines = statsd.named(ALERTS, check=check)
    assert len(lines) == total, [line.raw for line in lines]
    return Counter((line.tags["severity"], line.tags["action"]) for line in lines)


async def test_three_raises_of_one_key_page_once_and_its_resolution_resolves_once(
    make_router: MakeRouter, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    router = make_router()
    key = "validation:credit_features@3"
    alert = raised(
        key, model_name="credit-default", details={"job_id": "job-1", "model_version": 4, "ds": "2024-05-01"}
    )

    outcomes = [await router.on_raised(alert, event_id=eid(), occurred_at=AT) for _ in range(3)]
    outcomes.append(await router.on_resolved(resolved(key), event_id=eid(), occurred_at=AT))

    assert outcomes == [Outcome.RAISED, Outcome.SUPPRESSED, Outcome.SUPPRESSED, Outcome.RESOLVED]
    [trigger] = receiver.pagerduty(key, "trigger")
    [resolve] = receiver.pagerduty(key, "resolve")
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["class"] == "feature_validation"
    assert (
        trigger["payload"]["component"] == "credit-default"
        and trigger["payload"]["group"] == "credit_features"
    )
    assert trigger["links"] == [
        {"href": "http://gw.example/v1/jobs/job-1", "text": "Job job-1"},
        {
            "href": "http://gw.example/v1/models/credit-default/versions/4/card",
            "text": "Model card: credit-default v4",
        },
    ]
    details = trigger["payload"]["custom_details"]
    assert details["route"] == "page-critical-and-error" and details["details"]["ds"] == "2024-05-01"
    assert len(receiver.pagerduty(key)) == 2
    raise_event, resolve_event = receiver.datadog(key)
    assert raise_event["alert_type"] == "error" and resolve_event["alert_type"] == "success"
    assert raise_event["title"].startswith("ERROR feature_validation: 3 expectations failed")
    assert set(raise_event["tags"]) == {
        "check:feature_validation",
        "severity:error",
        "env:test",
        "model:credit-default",
        "feature_set:credit_features",
    }
    assert set(resolve_event["tags"]) == set(raise_event["tags"])
    assert "http://gw.example/v1/jobs/job-1" in raise_event["text"]
    assert alert_lines(statsd, 4) == {
        ("error", "raised"): 1,
        ("error", "suppressed"): 2,
        ("error", "resolved"): 1,
    }
    assert await router.incidents.list_open() == []


async def test_a_redelivered_event_changes_nothing(
    make_router: MakeRouter, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    router = make_router()
    key = "scoring:credit-default@credit_features"
    raise_id, resolve_id = eid(), eid()
    alert = raised(key, check="scoring_run", severity=Severity.CRITICAL)

    assert await router.on_raised(alert, event_id=raise_id, occurred_at=AT) is Outcome.RAISED
    assert await router.on_raised(alert, event_id=raise_id, occurred_at=AT) is Outcome.REDELIVERED
    assert (
        await router.on_resolved(resolved(key, "scoring_run"), event_id=resolve_id, occurred_at=AT)
        is Outcome.RESOLVED
    )
    assert (
        await router.on_resolved(resolved(key, "scoring_run"), event_id=resolve_id, occurred_at=AT)
        is Outcome.REDELIVERED
    )
    # the same event again after the resolution must not reopen the incident either
    assert await router.on_raised(alert, event_id=raise_id, occurred_at=AT) is Outcome.REDELIVERED

    assert [b["event_action"] for b in receiver.pagerduty(key)] == ["trigger", "resolve"]
    assert alert_lines(statsd, 2, "scoring_run") == {("critical", "raised"): 1, ("critical", "resolved"): 1}


async def test_a_restarted_router_remembers_the_open_incident(
    make_router: MakeRouter, receiver: EventsReceiver
) -> None:
    key = "drift:credit-default@credit_features"
    first = make_router()
    assert await first.on_raised(raised(key, check="drift"), event_id=eid(), occurred_at=AT) is Outcome.RAISED

    restarted = make_router()  # a new store on the same file, as after a restart
    assert (
        await restarted.on_raised(raised(key, check="drift"), event_id=eid(), occurred_at=AT)
        is Outcome.SUPPRESSED
    )
    [incident] = await restarted.incidents.list_open()
    assert (incident.dedup_key, incident.repeats, incident.paged) == (key, 1, True)
    assert (
        await restarted.on_resolved(resolved(key, "drift"), event_id=eid(), occurred_at=AT)
        is Outcome.RESOLVED
    )

    assert [b["event_action"] for b in receiver.pagerduty(key)] == ["trigger", "resolve"]


async def test_resolving_a_key_with_no_open_incident_does_nothing(
    make_router: MakeRouter, receiver: EventsReceiver
) -> None:
    router = make_router()
    assert (
        await router.on_resolved(resolved("airflow:dag_x"), event_id=eid(), occurred_at=AT)
        is Outcome.NOT_OPEN
    )
    assert receiver.received == []


async def test_a_notify_route_posts_to_datadog_and_never_pages(
    make_router: MakeRouter, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    router = make_router()
    key = "drift:churn@usage"
    alert = raised(key, check="drift", severity=Severity.WARNING)
    assert await router.on_raised(alert, event_id=eid(), occurred_at=AT) is Outcome.RAISED
    assert await router.on_raised(alert, event_id=eid(), occurred_at=AT) is Outcome.SUPPRESSED
    [incident] = await router.incidents.list_open()
    assert (incident.action, incident.rule, incident.paged) == (
        Action.NOTIFY,
        "notify-warning-and-info",
        False,
    )
    assert (
        await router.on_resolved(resolved(key, "drift"), event_id=eid(), occurred_at=AT) is Outcome.RESOLVED
    )

    assert receiver.pagerduty_attempts() == []
    assert [event["alert_type"] for event in receiver.datadog(key)] == ["warning", "success"]
    assert alert_lines(statsd, 3, "drift") == {
        ("warning", "raised"): 1,
        ("warning", "suppressed"): 1,
        ("warning", "resolved"): 1,
    }


async def test_a_drop_route_sends_nothing_and_opens_nothing(
    make_router: MakeRouter, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    router = make_router("routes:\n  - check: noisy\n    action: drop\n  - action: page\n")
    assert (
        await router.on_raised(raised("n", check="noisy"), event_id=eid(), occurred_at=AT) is Outcome.DROPPED
    )
    assert receiver.received == [] and await router.incidents.list_open() == []
    assert alert_lines(statsd, 1, "noisy") == {("error", "dropped"): 1}


async def test_a_rejected_trigger_opens_no_incident_so_the_next_alert_pages_again(
    make_router: MakeRouter, receiver: EventsReceiver
) -> None:
    router = make_router()
    receiver.script(PAGERDUTY_PATH, Reply(400, {"status": "invalid event", "errors": ["bad"]}))
    key = "validation:loans@1"
    assert await router.on_raised(raised(key), event_id=eid(), occurred_at=AT) is Outcome.RAISED
    assert await router.incidents.list_open() == []
    assert await router.on_raised(raised(key), event_id=eid(), occurred_at=AT) is Outcome.RAISED
    assert [a.status for a in receiver.pagerduty_attempts()] == [400, 202]
    assert [i.dedup_key for i in await router.incidents.list_open()] == [key]


async def test_an_unavailable_pagerduty_records_nothing_so_the_bus_retry_pages(
    make_router: MakeRouter, receiver: EventsReceiver
) -> None:
    router = make_router(max_attempts=2)
    receiver.script(PAGERDUTY_PATH, Reply(503), Reply(503))
    key, event_id = "validation:loans@2", eid()
    with pytest.raises(PagerUnavailable):
        await router.on_raised(raised(key), event_id=event_id, occurred_at=AT)
    assert await router.incidents.list_open() == [] and receiver.datadog() == []

    assert await router.on_raised(raised(key), event_id=event_id, occurred_at=AT) is Outcome.RAISED
    assert len(receiver.pagerduty(key, "trigger")) == 1 and len(receiver.datadog(key)) == 1


async def test_without_a_routing_key_it_would_page_and_still_keeps_incident_state(
    make_router: MakeRouter, receiver: EventsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    router = make_router(routing_key=None, datadog=False)
    key = "airflow:pf_score__credit"
    with caplog.at_level(logging.INFO):
        assert (
            await router.on_raised(raised(key, check="scoring_dag"), event_id=eid(), occurred_at=AT)
            is Outcome.RAISED
        )
        assert (
            await router.on_raised(raised(key, check="scoring_dag"), event_id=eid(), occurred_at=AT)
            is Outcome.SUPPRESSED
        )
        assert (
            await router.on_resolved(resolved(key, "scoring_dag"), event_id=eid(), occurred_at=AT)
            is Outcome.RESOLVED
        )
    assert receiver.received == []
    assert caplog.text.count("would page") == 1 and "would resolve airflow:pf_score__credit" in caplog.text


async def test_acknowledge_reaches_pagerduty_and_is_remembered(
    make_router: MakeRouter, receiver: EventsReceiver
) -> None:
    router = make_router()
    key = "scoring:m@f"
    await router.on_raised(raised(key, check="scoring_run"), event_id=eid(), occurred_at=AT)
    incident = await router.acknowledge(key)
    assert incident is not None and incident.acknowledged_at is not None
    assert [b["event_action"] for b in receiver.pagerduty(key)] == ["trigger", "acknowledge"]
    assert await router.acknowledge("no-such-key") is None
