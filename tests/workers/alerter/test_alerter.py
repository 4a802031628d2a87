"""The alert router as its real process on Tansu, paging a local PagerDuty stand-in and posting Datadog events."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts import topics
from pfactory.contracts.events import AlertRaised, AlertResolved, Severity
from tests.utils.statsd import StatsdCapture
from tests.workers.alerter.conftest import ROUTING_KEY
from tests.workers.alerter.receiver import DATADOG_KEY, EventsReceiver
from tests.workers.support import publish, running_worker, wait_for

pytestmark = pytest.mark.integration


def _alert(key: str, check: str, severity: Severity) -> AlertRaised:
    return AlertRaised(
        dedup_key=key,
        check=check,
        severity=severity,
        summary=f"{check} failed for credit_features 2024-05-01",
        source="test",
        model_name="credit-default",
        feature_set_name="credit_features",
        details={"job_id": "job-42", "model_version": 3},
    )


async def test_retries_of_one_alert_open_one_incident_across_a_restart_and_its_resolution_closes_it(
    bus_settings: BusSettings, tmp_path: Path, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    await ensure_topics(bus_settings)
    tag = uuid.uuid4().hex[:8]
    page_check, notify_check = f"page_{tag}", f"notify_{tag}"
    page_key, notify_key = f"validation:credit_features@{tag}", f"drift:credit-default@{tag}"
    routes = tmp_path / "routes.yaml"
    # alerts of other tests share pf.alerts: only this test's checks page or notify
    routes.write_text(
        f"routes:\n"
        f"  - {{name: page-test, check: {page_check}, action: page}}\n"
        f"  - {{name: notify-test, check: {notify_check}, action: notify}}\n"
        f"  - {{name: the-rest, action: drop}}\n"
    )
    env = {
        "PF_ALERTER_ROUTES_FILE": str(routes),
        "PF_ALERTER_STATE_DIR": str(tmp_path / "state"),
        "PF_ALERTER_PAGERDUTY_URL": receiver.url,
        "PF_ALERTER_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PF_ALERTER_DATADOG_API_URL": receiver.url,
        "PF_ALERTER_DATADOG_API_KEY": DATADOG_KEY,
        "PF_ALERTER_GATEWAY_URL": "http://gateway.example",
        "PF_ALERTER_INCIDENTS_API": "true",
        "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
        "PF_TELEMETRY_ENV": "test",
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def suppressed(count: int) -> bool:
        return len(statsd.named("pf.alerts.events", check=page_check, action="suppressed")) >= count

    with running_worker("alerter", bus_settings, logs, extra_env=env) as worker:
        for _ in range(3):  # as three retries of a failing job would
            await publish(bus_settings, _alert(page_key, page_check, Severity.ERROR))
        await publish(bus_settings, _alert(notify_key, notify_check, Severity.CRITICAL))
        wait_for(lambda: suppressed(2), 60, "two suppressed repeats", worker.log)
        wait_for(lambda: len(receiver.datadog(notify_key)) == 1, 15, "the notify alert's event", worker.log)
        open_keys = {i["dedup_key"] for i in httpx.get(f"{worker.url}/incidents").json()["incidents"]}
        assert {page_key, notify_key} <= open_keys
        acked = httpx.post(f"{worker.url}/incidents/acknowledge", params={"dedup_key": page_key})
        assert acked.status_code == 200 and acked.json()["acknowledged_at"]

    # a restart with a new consumer group replays every alert on the topic: none may page again
    with running_worker("alerter", bus_settings, logs, extra_env=env) as worker:
        await publish(bus_settings, _alert(page_key, page_check, Severity.ERROR))
        await publish(bus_settings, AlertResolved(dedup_key=page_key, check=page_check, source="test"))
        await publish(bus_settings, AlertResolved(dedup_key=notify_key, check=notify_check, source="test"))
        wait_for(lambda: len(receiver.pagerduty(page_key, "resolve")) == 1, 60, "the resolve", worker.log)
        wait_for(lambda: len(receiver.datadog(notify_key)) == 2, 15, "the notify resolution", worker.log)
        open_keys = {i["dedup_key"] for i in httpx.get(f"{worker.url}/incidents").json()["incidents"]}
        assert not {page_key, notify_key} & open_keys

    assert [b["event_action"] for b in receiver.pagerduty(page_key)] == ["trigger", "acknowledge", "resolve"]
    trigger = receiver.pagerduty(page_key, "trigger")[0]
    assert trigger["routing_key"] == ROUTING_KEY and trigger["payload"]["severity"] == "error"
    assert {"href": "http://gateway.example/v1/jobs/job-42", "text": "Job job-42"} in trigger["links"]
    assert receiver.pagerduty(notify_key) == []  # notify-only: never paged
    assert [e["alert_type"] for e in receiver.datadog(page_key)] == ["error", "success"]
    assert [e["alert_type"] for e in receiver.datadog(notify_key)] == ["error", "success"]
    assert "env:test" in receiver.datadog(page_key)[0]["tags"]

    def actions(check: str) -> dict[str, int]:
        lines = statsd.named("pf.alerts.events", check=check, service="alerter", env="test")
        found: dict[str, int] = {}
        for line in lines:
            found[line.tags["action"]] = found.get(line.tags["action"], 0) + int(line.value)
        return found

    statsd.wait_for(lambda: actions(notify_check).get("resolved") == 1, 5, "the resolved line")
    assert actions(page_check) == {"raised": 1, "suppressed": 3, "resolved": 1}
    assert actions(notify_check) == {"raised": 1, "resolved": 1}
    assert {line.tags["severity"] for line in statsd.named("pf.alerts.events", check=page_check)} == {"error"}
    requests = statsd.named("pf.alerts.pagerduty_requests", service="alerter")
    assert sorted((r.tags["action"], r.tags["outcome"]) for r in requests) == [
        ("acknowledge", "accepted"),
        ("resolve", "accepted"),
        ("trigger", "accepted"),
    ]
    assert statsd.named("pf.bus.handled", topic=topics.ALERTS, outcome="ok", service="alerter")


def test_a_bad_routes_file_stops_the_start_with_the_line_to_fix(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - check: drift\n    severity: urgent\n    action: page\n")
    done = subprocess.run(
        [sys.executable, "-m", "pfactory.alerter"],
        env={
            "PF_ALERTER_ROUTES_FILE": str(routes),
            "PF_ALERTER_STATE_DIR": str(tmp_path),
            "PATH": "/usr/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"alert routes file {routes} is invalid" in done.stderr
    assert (
        "line 3: routes[0].severity[0]: Input should be 'critical', 'error', 'warning' or 'info'"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
