"""Issue #8's "done when" for alerting, end to end on real processes: a feature partition that fails
validation pages once, however often its job is retried, and the next good run resolves the incident.

The materialiser and the alert router run as their real processes on the real broker (Tansu), with real
Spark and Great Expectations. PagerDuty and Datadog are SaaS that cannot run here: a local receiver stands
in for both and checks every body against the documented Events API v2 and events API schemas.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from pfactory.bus.broker import ensure_topics
from pfactory.bus.settings import BusSettings
from pfactory.contracts.events import FeatureSetRef, MaterialisationRequested
from tests.utils.statsd import StatsdCapture
from tests.workers.alerter.conftest import ROUTING_KEY
from tests.workers.alerter.receiver import DATADOG_KEY, EventsReceiver
from tests.workers.materialiser.conftest import BAD_DAY, CONFIG, DAYS, write_raw
from tests.workers.support import http_status, publish, running_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _request(name: str, day: date, attempt: int) -> MaterialisationRequested:
    config = {**CONFIG, "metadata": {**CONFIG["metadata"], "name": name}}  # type: ignore[dict-item]
    return MaterialisationRequested(
        job_id=f"{name}-{day}-r{attempt}",  # as the generated DAG's retries name them
        feature_set=FeatureSetRef(name=name, version="1"),
        config=config,
        start_ds=day,
        end_ds=day,
    )


async def test_a_failing_partition_pages_once_across_retries_and_the_next_good_run_resolves_it(
    bus_settings: BusSettings, tmp_path: Path, receiver: EventsReceiver, statsd: StatsdCapture
) -> None:
    await ensure_topics(bus_settings)
    name = f"credit-{uuid.uuid4().hex[:8]}"
    key = f"validation:{name}@1"
    routes = tmp_path / "routes.yaml"  # pf.alerts is shared with other tests: only this feature set pages
    routes.write_text(
        f"routes:\n  - {{name: ours, feature_set: '{name}', action: page}}\n  - {{action: drop}}\n"
    )
    data = write_raw(tmp_path / "data")
    alerter_env = {
        "PF_ALERTER_ROUTES_FILE": str(routes),
        "PF_ALERTER_STATE_DIR": str(tmp_path / "alerter"),
        "PF_ALERTER_PAGERDUTY_URL": receiver.url,
        "PF_ALERTER_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PF_ALERTER_DATADOG_API_URL": receiver.url,
        "PF_ALERTER_DATADOG_API_KEY": DATADOG_KEY,
        "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
    }
    materialiser_env = {
        "PF_MATERIALISER_DATA_ROOT": str(data),
        "PF_MATERIALISER_STORE_ROOT": str(tmp_path / "store"),
        "PF_MATERIALISER_GATEWAY_URL": "http://127.0.0.1:8080",
        "PF_TELEMETRY_STATSD_PORT": str(statsd.port),
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def actions(check: str = "feature_validation") -> Counter[str]:
        return Counter(line.tags["action"] for line in statsd.named("pf.alerts.events", check=check))

    with (
        running_worker("alerter", bus_settings, logs, extra_env=alerter_env) as alerter,
        running_worker("materialiser", bus_settings, logs, extra_env=materialiser_env) as materialiser,
    ):
        both = lambda: f"alerter:\n{alerter.log()[-2500:]}\nmaterialiser:\n{materialiser.log()[-2500:]}"  # noqa: E731
        wait_for(lambda: http_status(f"{materialiser.url}/health") == 200, 60, "materialiser /health", both)
        for attempt in range(3):  # the bad day, tried three times
            await publish(bus_settings, _request(name, BAD_DAY, attempt))
        wait_for(
            lambda: (
                statsd.named("pf.features.partitions", feature_set=f"{name}@1", status="failed")
                and len(statsd.named("pf.features.partitions", feature_set=f"{name}@1", status="failed")) == 3
            ),
            180,
            "three failed validations of the bad day",
            both,
        )
        wait_for(lambda: actions()["suppressed"] == 2, 60, "the two retries' alerts suppressed", both)
        assert [page["event_action"] for page in receiver.pagerduty(key)] == ["trigger"]

        await publish(bus_settings, _request(name, DAYS[2], 0))  # the next run is good
        wait_for(lambda: actions()["resolved"] == 1, 180, "the incident resolved", both)

    pages = receiver.pagerduty(key)
    assert [page["event_action"] for page in pages] == ["trigger", "resolve"]
    trigger = pages[0]
    assert trigger["routing_key"] == ROUTING_KEY and trigger["payload"]["severity"] == "error"
    assert f"failed validation on {BAD_DAY}" in trigger["payload"]["summary"]
    jobs = {f"/v1/jobs/{name}-{BAD_DAY}-r{attempt}" for attempt in range(3)}  # whichever ran first
    assert any(link["href"].endswith(tuple(jobs)) for link in trigger["links"]), trigger["links"]
    assert [event["alert_type"] for event in receiver.datadog(key)] == ["error", "success"]
    assert actions() == {"raised": 1, "suppressed": 2, "resolved": 1}
