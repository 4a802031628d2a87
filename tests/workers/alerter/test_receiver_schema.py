"""The receiver's schema checks refuse what PagerDuty and Datadog refuse (so a passing test means something)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.alerter.conftest import ROUTING_KEY
from tests.workers.alerter.receiver import DATADOG_KEY, datadog_problems, pagerduty_problems


def _trigger(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "validation:credit@1",
        "payload": {"summary": "3 expectations failed", "source": "materialiser", "severity": "error"},
    }
    body.update(changes)
    return body


def test_a_documented_trigger_and_resolve_pass() -> None:
    assert pagerduty_problems(_trigger(links=[{"href": "https://x.example/a", "text": "job"}])) == []
    resolve = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "validation:credit@1"}
    assert pagerduty_problems(resolve) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (_trigger(routing_key="short"), "routing_key has 5 characters"),
        (_trigger(event_action="open"), "event_action 'open'"),
        (_trigger(dedup_key="k" * 256), "dedup_key has 256 characters"),
        (_trigger(payload={"summary": "s", "source": "x", "severity": "high"}), "payload.severity 'high'"),
        (
            _trigger(payload={"summary": "s" * 1025, "source": "x", "severity": "info"}),
            "payload.summary has 1025",
        ),
        (_trigger(payload={"source": "x", "severity": "info"}), "payload.summary must be a string"),
        (_trigger(payload=None), "payload is required"),
        (_trigger(links=[{"url": "https://x"}]), "links[0] must be an object"),
        (_trigger(contexts=[]), "unknown field 'contexts'"),
        ({"routing_key": ROUTING_KEY, "event_action": "resolve"}, "dedup_key must be a string"),
    ],
)
def test_pagerduty_bodies_that_break_the_schema_are_named(body: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in pagerduty_problems(body)), pagerduty_problems(body)


def test_datadog_bodies_are_checked_with_their_key() -> None:
    good = {"title": "t", "text": "x", "alert_type": "error", "aggregation_key": "k", "tags": ["a:b"]}
    assert datadog_problems(good, DATADOG_KEY) == []
    assert datadog_problems(good, None) == ["DD-API-KEY header is None"]
    assert any("title has 101" in p for p in datadog_problems({**good, "title": "t" * 101}, DATADOG_KEY))
    assert any(
        "alert_type 'critical'" in p
        for p in datadog_problems({**good, "alert_type": "critical"}, DATADOG_KEY)
    )
