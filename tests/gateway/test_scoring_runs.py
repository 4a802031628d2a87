"""Scoring runs (``/v1/scoring-runs``): the request event on the real bus, validation, scopes, idempotency."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from pfactory.bus import BusSettings, EventPublisher, build_broker, read_envelopes
from pfactory.contracts import topics
from pfactory.contracts.events import FeatureSetRef, JobStatus, JobStatusChanged, ScoringRequested
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.wiring import Registry
from tests.gateway.registry_support import BUREAU_PAIR, LIMIT_PAIR, PAIR, make_live, seed
from tests.gateway.support import RecordingSink, eventually, serving

DAY = "2024-07-01"


async def _seed(registry: Registry) -> None:
    """credit_default on two feature sets (v2 live and alias 'champion' on credit_features@3); credit_limit."""
    for key in ("job-1", "job-2"):
        await seed(registry, PAIR, key)
    await make_live(registry, PAIR, 2)
    await registry.index.move_alias(PAIR, "champion", 2, actor="seed")
    await seed(registry, BUREAU_PAIR, "job-b1")
    await seed(registry, LIMIT_PAIR, "job-l1")
    await make_live(registry, LIMIT_PAIR, 1)


def _scoring_requests(sink: RecordingSink) -> list[ScoringRequested]:
    """What the relay published on the scoring topic (the registry feed publishes beside it)."""
    return [
        e.open_as(ScoringRequested) for e, topic, _ in sink.published if topic == topics.SCORING_REQUESTED
    ]


def _body(**overrides: Any) -> dict[str, Any]:
    return {"model": "credit_default", "feature_set": "credit_features@3", "ds": DAY, **overrides}


@pytest.mark.integration
async def test_a_run_publishes_scoring_requested_and_follows_the_scorers_status(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings, registry: Registry
) -> None:
    await _seed(registry)
    worker = build_broker(bus_settings, service="test-scorer")
    await worker.connect()
    try:
        async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as client:
            # credit_limit has one pair: the gateway names it in the event so the scorer need not guess
            response = await client.post("/v1/scoring-runs", json={"model": "credit_limit", "ds": DAY})
            assert response.status_code == 202, response.text
            created = response.json()
            run_id = created["run_id"]
            assert response.headers["Location"].endswith(f"/v1/scoring-runs/{run_id}")
            assert (created["status"], created["replayed"], created["feature_set"]) == (
                "accepted",
                False,
                "credit_features@4",
            )
            seen = await read_envelopes(
                bus_settings,
                topics.SCORING_REQUESTED,
                keep=lambda e: e.correlation_id == run_id,
                count=1,
                timeout_s=30,
            )
            assert seen, f"no ScoringRequested of run {run_id} on {topics.SCORING_REQUESTED}"
            event = seen[0].envelope.open_as(ScoringRequested)
            assert (event.job_id, event.model_name, event.ds) == (run_id, "credit_limit", date(2024, 7, 1))
            assert event.feature_set == FeatureSetRef(name="credit_features", version="4")
            assert (event.version, event.alias) == (None, None)  # the live version, resolved by the scorer

            result = {"predictions_uri": "file:///p/ds=2024-07-01", "rows": 1200, "drift": {}, "version": 1}
            await EventPublisher(worker, "scorer").publish(
                JobStatusChanged(job_id=run_id, status=JobStatus.SUCCEEDED, stage="written", result=result)
            )

            async def finished() -> bool:
                return bool((await client.get(f"/v1/scoring-runs/{run_id}")).json()["terminal"])

            await eventually(finished, timeout=60, what="the run to finish")
            run = (await client.get(f"/v1/scoring-runs/{run_id}")).json()
            assert (run["status"], run["stage"], run["result"]) == ("succeeded", "written", result)
            assert (run["model"], run["ds"], run["feature_set"]) == ("credit_limit", DAY, "credit_features@4")
    finally:
        await worker.stop()


async def test_bad_requests_are_refused_with_advice_and_start_nothing(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await _seed(registry)
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        unknown = await client.post("/v1/scoring-runs", json=_body(model="credit_defualt"))
        assert unknown.status_code == 404
        assert unknown.json()["models"] == ["credit_default", "credit_limit"]
        assert "credit_default, credit_limit" in unknown.json()["detail"]

        both = await client.post("/v1/scoring-runs", json=_body(version=2, alias="champion"))
        assert both.status_code == 422
        assert "pick one of 'version' (2) or 'alias' ('champion')" in both.json()["detail"]

        bad_day = await client.post("/v1/scoring-runs", json=_body(ds="2024-13-01"))
        assert bad_day.status_code == 422
        assert [issue["path"] for issue in bad_day.json()["issues"]] == ["body.ds"]

        ambiguous = await client.post("/v1/scoring-runs", json=_body(feature_set=None))
        assert ambiguous.status_code == 409
        assert ambiguous.json()["feature_sets"] == ["bureau_features@1", "credit_features@3"]

        no_version = await client.post("/v1/scoring-runs", json=_body(version=9))
        assert (no_version.status_code, no_version.json()["code"]) == (404, "version_not_found")
        no_alias = await client.post("/v1/scoring-runs", json=_body(alias="shadow"))
        assert (no_alias.status_code, no_alias.json()["code"]) == (404, "alias_not_found")
        not_live = await client.post("/v1/scoring-runs", json=_body(feature_set="bureau_features@1"))
        assert (not_live.status_code, not_live.json()["code"]) == (409, "no_live_version")
        malformed_fs = await client.post("/v1/scoring-runs", json=_body(feature_set="credit_features"))
        assert malformed_fs.status_code == 422

        assert (await client.get("/v1/scoring-runs")).json()["count"] == 0
        missing = await client.get("/v1/scoring-runs/nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "run_not_found")
    assert _scoring_requests(sink) == []


async def test_scopes_submit_starts_read_follows(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await _seed(registry)
    async with serving(create_app(gateway_settings, sink=RecordingSink()), admin_key) as client:
        keys = {}
        for scope in ("submit", "read"):
            created = await client.post("/v1/keys", json={"name": f"airflow-{scope}", "scopes": [scope]})
            keys[scope] = {"Authorization": f"Bearer {created.json()['key']}"}
        anonymous = httpx.Headers({"Authorization": ""})
        assert (await client.post("/v1/scoring-runs", json=_body(), headers=anonymous)).status_code == 401
        assert (await client.post("/v1/scoring-runs", json=_body(), headers=keys["read"])).status_code == 403
        started = await client.post("/v1/scoring-runs", json=_body(), headers=keys["submit"])
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        assert (await client.get(f"/v1/scoring-runs/{run_id}", headers=keys["submit"])).status_code == 403
        run = (await client.get(f"/v1/scoring-runs/{run_id}", headers=keys["read"])).json()
        assert (run["status"], run["submitted_by"], run["version"]) == ("accepted", "airflow-submit", None)


async def test_a_retried_request_returns_the_first_run_instead_of_starting_another(
    gateway_settings: GatewaySettings, admin_key: str, registry: Registry
) -> None:
    await _seed(registry)
    sink = RecordingSink()
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as client:
        retry = {"Idempotency-Key": "credit_default__scheduled__2024-07-01"}
        first = await client.post("/v1/scoring-runs", json=_body(alias="champion"), headers=retry)
        again = await client.post("/v1/scoring-runs", json=_body(alias="champion"), headers=retry)
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["run_id"] == first.json()["run_id"] and again.json()["replayed"] is True
        assert again.headers["Location"] == first.headers["Location"]

        changed = await client.post("/v1/scoring-runs", json=_body(version=2), headers=retry)
        assert changed.status_code == 409
        assert changed.json()["differing"] == ["alias", "version"]

        chosen = _body(version=1, run_id="scheduled__2024-07-01T00:00:00+00:00")
        assert (await client.post("/v1/scoring-runs", json=chosen)).status_code == 202
        assert (await client.post("/v1/scoring-runs", json=chosen)).json()["replayed"] is True
        both = await client.post("/v1/scoring-runs", json=chosen, headers=retry)
        assert both.status_code == 422 and "not both" in both.json()["detail"]

        await eventually(
            lambda: len(_scoring_requests(sink)) >= 2, what="the two distinct runs to be published"
        )
        runs = (await client.get("/v1/scoring-runs", params={"model": "credit_default"})).json()
        assert runs["count"] == 2
        assert {(run["alias"], run["version"]) for run in runs["data"]} == {("champion", None), (None, 1)}
        assert (await client.get("/v1/scoring-runs", params={"model": "credit_limit"})).json()["count"] == 0
    published = _scoring_requests(sink)
    assert len(published) == 2 and {run.job_id for run in published} == {
        run["run_id"] for run in runs["data"]
    }


async def test_openapi_describes_the_scoring_run_routes(gateway_settings: GatewaySettings) -> None:
    async with serving(create_app(gateway_settings, sink=RecordingSink())) as client:
        document = (await client.get("/openapi.json")).json()
    runs, run = document["paths"]["/v1/scoring-runs"], document["paths"]["/v1/scoring-runs/{run_id}"]
    for operation in (runs["post"], runs["get"], run["get"]):
        assert operation["tags"] == ["scoring-runs"] and operation["description"]
        assert {"HTTPBearer": []} in operation["security"] and {"401", "403"} <= set(operation["responses"])
    start = runs["post"]
    assert {"200", "202", "404", "409", "422"} <= set(start["responses"])
    assert [p["name"] for p in start["parameters"] if p["in"] == "header"] == ["Idempotency-Key"]
    body = start["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = document["components"]["schemas"][body]["properties"]
    assert {"model", "ds", "version", "alias", "feature_set", "run_id"} == set(fields)
    assert {"model", "status"} <= {p["name"] for p in runs["get"]["parameters"]}
    assert "scoring-runs" in {tag["name"] for tag in document["tags"]}
