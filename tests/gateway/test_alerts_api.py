"""``POST /v1/alerts`` (what a generated DAG's failure callback calls): an ``AlertRaised`` on the real bus."""

from __future__ import annotations

import pytest

from pfactory.bus import BusSettings, read_envelopes
from pfactory.contracts import topics
from pfactory.contracts.events import AlertRaised, Severity
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from tests.gateway.support import RecordingSink, eventually, serving

ALERT = {
    "dedup_key": "airflow:pf_score__credit_default__credit_features_3__v4",
    "check": "scoring_dag",
    "severity": "error",
    "summary": "start_scoring failed for 2026-12-04",
    "model_name": "credit_default",
    "links": {"airflow_log": "http://airflow.example/log?dag_id=x"},
}


@pytest.mark.integration
async def test_an_alert_is_published_to_the_alerts_topic(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings
) -> None:
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
        response = await client.post("/v1/alerts", json=ALERT)
        assert response.status_code == 202, response.text
        event_id = response.json()["event_id"]
        seen = await read_envelopes(
            bus_settings, topics.ALERTS, keep=lambda e: e.event_id == event_id, count=1, timeout_s=30
        )
    assert seen, "the alert never reached pf.alerts"
    alert = seen[0].envelope.open_as(AlertRaised)
    assert (alert.dedup_key, alert.check, alert.severity) == (
        ALERT["dedup_key"],
        "scoring_dag",
        Severity.ERROR,
    )
    assert alert.source.startswith("api:") and alert.links == ALERT["links"]


async def test_bad_alerts_are_refused_and_publish_nothing(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        for bad in (
            {**ALERT, "severity": "apocalyptic"},
            {**ALERT, "dedup_key": "has spaces"},
            {**ALERT, "summary": ""},
            {**ALERT, "unknown": 1},
        ):
            response = await client.post("/v1/alerts", json=bad)
            assert response.status_code == 422, response.text
        ok = await client.post("/v1/alerts", json=ALERT)
        assert ok.status_code == 202
        await eventually(lambda: len(sink.published) == 1, what="the one good alert published")
    assert [topic for _, topic, _ in sink.published] == [topics.ALERTS]


async def test_raising_an_alert_needs_a_key_with_the_submit_scope(
    gateway_settings: GatewaySettings, admin_key: str
) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        created = await client.post("/v1/keys", json={"name": "dashboards", "scopes": ["read"]})
        reader = created.json()["key"]
        refused = await client.post("/v1/alerts", json=ALERT, headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403
        anonymous = await client.post("/v1/alerts", json=ALERT, headers={"Authorization": ""})
        assert anonymous.status_code == 401
