"""The registry API over HTTP: browse, download, govern (status, aliases, archive), events, lineage, cards.

Events come from the registry feed, which re-publishes a version's whole audit trail (same ids) each
time it changes; the helpers dedupe on ``event_id`` as a consumer does.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from pfactory.bus import BusSettings, read_envelopes
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope
from pfactory.gateway.app import create_app
from pfactory.gateway.settings import GatewaySettings
from pfactory.registry.errors import ArtifactIntegrityError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import PairKey, VersionStatus
from pfactory.registry.wiring import Registry
from tests.gateway.registry_support import (
    BUREAU_PAIR,
    LIMIT_PAIR,
    PAIR,
    changes,
    distinct_envelopes,
    expected_event_id,
    make_live,
    seed,
)
from tests.gateway.support import RecordingSink, eventually, serving

FS = "credit_features@3"
V = f"/v1/models/credit_default/versions?feature_set={FS}"


def version_url(version: int, suffix: str = "", pair: PairKey = PAIR) -> str:
    fs = f"{pair.feature_set.name}@{pair.feature_set.version}"
    return f"/v1/models/{pair.model_name}/versions/{version}{suffix}?feature_set={fs}"


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(
    gateway_settings: GatewaySettings, admin_key: str, sink: RecordingSink
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(gateway_settings, sink=sink), admin_key) as http:
        yield http


async def new_key(client: httpx.AsyncClient, *scopes: str) -> dict[str, str]:
    response = await client.post("/v1/keys", json={"name": f"{'-'.join(scopes)}-key", "scopes": list(scopes)})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def published(sink: RecordingSink, count: int) -> None:
    await eventually(
        lambda: len(changes(sink)) >= count, what=f"{count} distinct ModelVersionChanged event(s)"
    )


def ids_of(sink: RecordingSink, version: int, pair: PairKey = PAIR) -> list[str]:
    prefix = f"/v{version}"
    return [
        envelope.event_id
        for envelope in distinct_envelopes(sink)
        if envelope.correlation_id == f"{pair}{prefix}"
    ]


# ---------------------------------------------------------------------------- browsing


async def test_models_list_their_pairs_with_latest_and_live_versions(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    for key in ("job-1", "job-2", "job-3"):
        await seed(registry, PAIR, key)
    await seed(registry, BUREAU_PAIR, "job-b1")
    await seed(registry, LIMIT_PAIR, "job-l1")
    await make_live(registry, PAIR, 2)

    listing = (await client.get("/v1/models")).json()
    assert [m["name"] for m in listing["data"]] == ["credit_default", "credit_limit"]
    assert listing["next_cursor"] is None
    credit = listing["data"][0]
    assert [(p["feature_set"], p["latest_version"], p["live_version"]) for p in credit["pairs"]] == [
        ("bureau_features@1", 1, None),
        ("credit_features@3", 3, 2),
    ]
    assert credit["pairs"][1]["versions_url"] == V

    first = (await client.get("/v1/models", params={"limit": 1})).json()
    second = (await client.get("/v1/models", params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [m["name"] for m in first["data"] + second["data"]] == ["credit_default", "credit_limit"]
    assert second["next_cursor"] is None

    assert (await client.get("/v1/models/credit_limit")).json()["pairs"][0]["pair"] == str(LIMIT_PAIR)
    missing = await client.get("/v1/models/no_such_model")
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found" and "GET /v1/models" in missing.json()["detail"]


async def test_versions_paginate_sort_filter_and_need_a_feature_set_when_ambiguous(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    for i in range(5):
        await seed(registry, PAIR, f"job-{i}")
    await seed(registry, BUREAU_PAIR, "job-b1")
    await registry.index.transition(PAIR, 2, VersionStatus.APPROVED, actor="seed")
    await registry.index.transition(PAIR, 4, VersionStatus.APPROVED, actor="seed")

    ambiguous = await client.get("/v1/models/credit_default/versions")
    assert ambiguous.status_code == 409
    body = ambiguous.json()
    assert body["code"] == "ambiguous_feature_set"
    assert body["feature_sets"] == ["bureau_features@1", "credit_features@3"]
    assert "?feature_set=" in body["detail"]

    async def pages(**params: str | int) -> list[list[int]]:
        found, cursor = [], None
        while True:
            query = {"feature_set": FS, **params, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/models/credit_default/versions", params=query)).json()
            found.append([item["version"] for item in page["data"]])
            if page["next_cursor"] is None:
                return found
            cursor = page["next_cursor"]

    assert await pages(limit=2) == [[5, 4], [3, 2], [1]]
    assert await pages(limit=2, sort="version") == [[1, 2], [3, 4], [5]]
    assert await pages(status="approved") == [[4, 2]]
    only = (await client.get("/v1/models/credit_default/versions?feature_set=bureau_features@1")).json()
    assert [item["pair"] for item in only["data"]] == [str(BUREAU_PAIR)]

    unknown_fs = await client.get("/v1/models/credit_default/versions?feature_set=credit_features@9")
    assert (
        unknown_fs.status_code == 404
        and "bureau_features@1, credit_features@3" in unknown_fs.json()["detail"]
    )
    assert (await client.get("/v1/models/credit_default/versions?feature_set=nope")).status_code == 422
    bad_cursor = await client.get(f"{V}&cursor=not-a-cursor")
    assert bad_cursor.status_code == 422 and bad_cursor.json()["issues"][0]["path"] == "cursor"
    assert (await client.get(f"{V}&sort=size")).status_code == 422


async def test_version_detail_holds_the_whole_record(client: httpx.AsyncClient, registry: Registry) -> None:
    record = await seed(registry, PAIR, "job-1")
    detail = (await client.get(version_url(1))).json()
    assert detail["version"] == 1 and detail["status"] == "candidate" and detail["pair"] == str(PAIR)
    assert detail["artifact"]["sha256"] == record.artifact.sha256
    assert detail["config"] == record.config and detail["allocation_key"] == "job-1"
    assert detail["lineage"]["row_counts"] == {"train": 800, "test": 200}
    assert detail["metrics"]["roc_auc"] == {"value": 0.81, "ci_low": 0.78, "ci_high": 0.84}
    assert [(e["action"], e["to"]) for e in detail["audit"]] == [("registered", "candidate")]
    assert detail["artifact_url"] == version_url(1, "/artifact")
    assert detail["card_url"] == version_url(1, "/card")
    # one pair: the feature set may be left out
    assert (await client.get("/v1/models/credit_default/versions/1")).json()["version"] == 1

    missing = await client.get(version_url(7))
    assert missing.status_code == 404 and missing.json()["code"] == "version_not_found"
    assert f"GET {V}" in missing.json()["detail"]


# ---------------------------------------------------------------------------- artifacts


async def test_the_artifact_streams_its_exact_bytes_with_the_registered_sha(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB chunks
    await seed(registry, PAIR, "job-1", content=content)
    sha = hashlib.sha256(content).hexdigest()
    async with client.stream("GET", version_url(1, "/artifact")) as response:
        assert response.status_code == 200
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == content
    assert response.headers["x-content-sha256"] == sha and response.headers["etag"] == f'"{sha}"'
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["content-type"] == "application/octet-stream"
    unverified = await client.get(version_url(1, "/artifact") + "&verify=false")
    assert unverified.content == content
    cached = await client.get(version_url(1, "/artifact"), headers={"If-None-Match": f'"{sha}"'})
    assert cached.status_code == 304 and cached.content == b""


async def test_a_tampered_artifact_is_refused_not_served(
    client: httpx.AsyncClient, registry: Registry, gateway_settings: GatewaySettings
) -> None:
    record = await seed(registry, PAIR, "job-1")
    path = gateway_settings.registry_settings().data_dir / "artifacts" / VersionLayout(PAIR, 1).model
    tampered = b"X" + path.read_bytes()[1:]  # same size, different content
    path.write_bytes(tampered)
    actual = hashlib.sha256(tampered).hexdigest()

    refused = await client.get(version_url(1, "/artifact"))
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "artifact_integrity"
    assert (body["expected_sha256"], body["actual_sha256"]) == (record.artifact.sha256, actual)
    assert record.artifact.sha256 in body["detail"] and actual in body["detail"]
    assert "version=1" in body["detail"]
    # without the pre-check, the stream is checked as it goes and aborted before it completes
    with pytest.raises(ArtifactIntegrityError, match=actual):
        await client.get(version_url(1, "/artifact") + "&verify=false")

    Path(path).unlink()
    gone = await client.get(version_url(1, "/artifact"))
    assert gone.status_code == 404 and gone.json()["code"] == "artifact_not_found"


# ---------------------------------------------------------------------------- governance


async def test_status_changes_follow_the_lifecycle_and_are_published(
    client: httpx.AsyncClient, registry: Registry, sink: RecordingSink
) -> None:
    await seed(registry, PAIR, "job-1")
    approved = await client.patch(version_url(1), json={"status": "approved", "reason": "looks good"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    again = await client.patch(version_url(1), json={"status": "approved"})
    assert again.status_code == 200  # asking for the status it has changes nothing

    backwards = await client.patch(version_url(1), json={"status": "candidate"})
    assert backwards.status_code == 409
    body = backwards.json()
    assert body["code"] == "illegal_transition"
    assert (body["from_status"], body["to_status"]) == ("approved", "candidate")
    assert body["allowed"] == ["archived", "live", "rejected"]
    assert "cannot move from approved to candidate" in body["detail"]

    live = (await client.patch(version_url(1), json={"status": "live"})).json()
    assert [(e["action"], e["from"], e["to"], e["actor"]) for e in live["audit"][1:]] == [
        ("transition", "candidate", "approved", "bootstrap-admin"),
        ("transition", "approved", "live", "bootstrap-admin"),
    ]
    assert (await client.get("/v1/models/credit_default")).json()["pairs"][0]["live_version"] == 1
    assert (await client.patch(version_url(1), json={"status": "bogus"})).status_code == 422

    await published(sink, 3)
    events = changes(sink)
    assert [(e.action, e.version, e.from_status, e.to_status, e.actor) for e in events] == [
        ("registered", 1, None, "candidate", "registrar"),
        ("status", 1, "candidate", "approved", "bootstrap-admin"),
        ("status", 1, "approved", "live", "bootstrap-admin"),
    ]
    assert events[1].reason == "looks good" and not any(e.override for e in events)
    assert ids_of(sink, 1) == [expected_event_id(PAIR, 1, i) for i in range(3)]
    envelopes = distinct_envelopes(sink)
    assert [e.occurred_at for e in envelopes] == [
        datetime.fromisoformat(entry["at"]) for entry in live["audit"]
    ]
    assert {(e.producer, e.correlation_id) for e in envelopes} == {("gateway", f"{PAIR}/v1")}


async def test_a_version_that_failed_its_gates_needs_an_override_with_a_reason(
    client: httpx.AsyncClient, registry: Registry, sink: RecordingSink
) -> None:
    await seed(registry, PAIR, "job-1", gates={"fairness": False, "validation": True})
    refused = await client.patch(version_url(1), json={"status": "approved"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "gate_failed" and refused.json()["failed_gates"] == ["fairness"]
    no_reason = await client.patch(
        version_url(1), json={"status": "approved", "override": True, "reason": " "}
    )
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["issues"][0]["message"]
    assert (await client.get(version_url(1))).json()["status"] == "candidate"

    reason = "risk committee accepted the age-band gap (ticket RISK-42)"
    accepted = await client.patch(
        version_url(1), json={"status": "approved", "override": True, "reason": reason}
    )
    assert accepted.status_code == 200
    entry = accepted.json()["audit"][-1]
    assert (entry["action"], entry["reason"], entry["actor"]) == ("override", reason, "bootstrap-admin")
    await published(sink, 2)
    registered, event = changes(sink)
    assert (registered.action, registered.override) == ("registered", False)
    assert (event.action, event.override, event.reason, event.actor) == (
        "status",
        True,
        reason,
        "bootstrap-admin",
    )
    assert (event.from_status, event.to_status) == ("candidate", "approved")
    assert ids_of(sink, 1) == [expected_event_id(PAIR, 1, i) for i in range(2)]


async def test_aliases_are_set_moved_and_removed(
    client: httpx.AsyncClient, registry: Registry, sink: RecordingSink
) -> None:
    for key in ("job-1", "job-2"):
        await seed(registry, PAIR, key)
    alias_url = f"/v1/models/credit_default/aliases/champion?feature_set={FS}"
    assert (await client.get(alias_url)).status_code == 404
    assert (await client.put(alias_url, json={"version": 1})).json()["aliases"] == ["champion"]
    assert (await client.get(alias_url)).json()["version"] == 1
    moved = await client.put(alias_url, json={"version": 2})
    assert moved.status_code == 200 and moved.json()["aliases"] == ["champion"]
    assert (await client.get(version_url(1))).json()["aliases"] == []
    assert (await client.put(alias_url, json={"version": 2})).status_code == 200  # no change

    assert (await client.put(alias_url, json={"version": 9})).status_code == 404
    bad_name = await client.put("/v1/models/credit_default/aliases/no%20spaces", json={"version": 1})
    assert bad_name.status_code == 422

    removed = await client.delete(alias_url + "&reason=retired")
    assert removed.status_code == 200 and removed.json()["version"] == 2 and removed.json()["aliases"] == []
    assert removed.json()["audit"][-1]["reason"] == "retired"
    gone = await client.get(alias_url)
    assert gone.status_code == 404 and gone.json()["code"] == "alias_not_found"
    assert "PUT /v1/models/credit_default/aliases/champion" in gone.json()["detail"]
    assert (await client.delete(alias_url)).status_code == 404

    await published(sink, 6)
    admin = "bootstrap-admin"
    assert [(e.action, e.alias, e.reason, e.actor) for e in changes(sink, version=1)] == [
        ("registered", None, None, "registrar"),
        ("alias_set", "champion", None, admin),
        ("alias_removed", "champion", "moved to 2", admin),  # the move took it from version 1
    ]
    assert [(e.action, e.alias, e.reason, e.actor) for e in changes(sink, version=2)] == [
        ("registered", None, None, "registrar"),
        ("alias_set", "champion", None, admin),
        ("alias_removed", "champion", "retired", admin),
    ]
    alias_events = [e for e in changes(sink) if e.alias]
    assert all(e.from_status is None and e.to_status is None and not e.override for e in alias_events)
    for version in (1, 2):
        assert ids_of(sink, version) == [expected_event_id(PAIR, version, i) for i in range(3)]


async def test_delete_archives_and_records_it(
    client: httpx.AsyncClient, registry: Registry, sink: RecordingSink
) -> None:
    await seed(registry, PAIR, "job-1")
    await seed(registry, PAIR, "job-2")
    await registry.index.transition(PAIR, 2, VersionStatus.REJECTED, actor="seed")
    archived = await client.delete(version_url(1) + "&reason=superseded")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    entry = archived.json()["audit"][-1]
    assert (entry["from"], entry["to"], entry["reason"]) == ("candidate", "archived", "superseded")
    assert (await client.delete(version_url(1))).status_code == 200  # already archived
    rejected = await client.delete(version_url(2))
    assert rejected.status_code == 409 and rejected.json()["allowed"] == []
    assert (await client.get(version_url(1))).json()["status"] == "archived"  # still there
    await published(sink, 4)
    assert [(e.action, e.from_status, e.to_status, e.reason, e.actor) for e in changes(sink, version=1)] == [
        ("registered", None, "candidate", None, "registrar"),
        ("archived", "candidate", "archived", "superseded", "bootstrap-admin"),
    ]
    # the rejection was made in the registry directly (not through the API): published all the same
    assert [(e.action, e.from_status, e.to_status, e.actor) for e in changes(sink, version=2)] == [
        ("registered", None, "candidate", "registrar"),
        ("status", "candidate", "rejected", "seed"),
    ]
    assert ids_of(sink, 1) == [expected_event_id(PAIR, 1, i) for i in range(2)]


async def test_reads_need_read_and_changes_need_admin(client: httpx.AsyncClient, registry: Registry) -> None:
    await seed(registry, PAIR, "job-1")
    reader, submitter = await new_key(client, "read"), await new_key(client, "submit")
    alias_url = "/v1/models/credit_default/aliases/champion"
    reads = ["/v1/models", "/v1/models/credit_default", V, version_url(1), version_url(1, "/card")]
    for url in reads:
        assert (await client.get(url, headers=reader)).status_code == 200, url
        assert (await client.get(url, headers=submitter)).status_code == 403, url
        assert (await client.get(url, headers={"Authorization": ""})).status_code == 401, url
    changes_ = [
        ("PATCH", version_url(1), {"status": "approved"}),
        ("DELETE", version_url(1), None),
        ("PUT", alias_url, {"version": 1}),
        ("DELETE", alias_url, None),
    ]
    for method, url, body in changes_:
        for headers in (reader, submitter):
            answer = await client.request(method, url, json=body, headers=headers)
            assert answer.status_code == 403, (method, url)
            assert answer.json()["required_scope"] == "admin"
    assert (await client.get(version_url(1))).json()["status"] == "candidate"


# ---------------------------------------------------------------------------- lineage and cards


async def test_lineage_finds_versions_by_feature_set_and_says_when_column_lineage_is_missing(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    for pair, key in ((PAIR, "job-1"), (PAIR, "job-2"), (LIMIT_PAIR, "job-1"), (BUREAU_PAIR, "job-1")):
        await seed(registry, pair, key)
    await make_live(registry, PAIR, 2)
    on_fs = (await client.get("/v1/lineage/feature-sets/credit_features/versions")).json()
    assert [(v["model_name"], v["feature_set"], v["version"]) for v in on_fs["data"]] == [
        ("credit_default", "credit_features@3", 1),
        ("credit_default", "credit_features@3", 2),
        ("credit_limit", "credit_features@4", 1),
    ]
    v4 = (await client.get("/v1/lineage/feature-sets/credit_features/versions?version=4")).json()
    assert [(v["model_name"], v["version"]) for v in v4["data"]] == [("credit_limit", 1)]
    live = (await client.get("/v1/lineage/feature-sets/credit_features/versions?status=live")).json()
    assert [v["version"] for v in live["data"]] == [2]

    column = (await client.get("/v1/lineage/source-columns", params={"column": "applicants.income"})).json()
    assert column["data"] == [] and column["feature_sets"] == []
    assert "no catalogued feature-set version derives from applicants.income" in column["note"]


async def test_the_card_comes_as_json_markdown_or_html_with_user_text_escaped(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    config = {
        "kind": "Model",
        "metadata": {"name": "credit_default", "owner": "risk-ds@bank.example"},
        "spec": {"card": {"intended_use": "<script>alert('x')</script> pre-screening", "limitations": "a|b"}},
    }
    await seed(registry, PAIR, "job-1", config=config)
    as_json = await client.get(version_url(1, "/card"))
    assert as_json.headers["content-type"] == "application/json"
    card = as_json.json()
    assert (card["model_name"], card["version"], card["owner"]) == (
        "credit_default",
        1,
        "risk-ds@bank.example",
    )
    assert card["metrics"][0]["name"] == "roc_auc" and card["approval_history"][0]["action"] == "registered"

    markdown = await client.get(version_url(1, "/card"), headers={"Accept": "text/markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# Model card: credit_default v1") and "<script>" not in markdown.text

    page = await client.get(version_url(1, "/card") + "&format=html")
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; pre-screening" in page.text
    assert "<script>" not in page.text
    assert (await client.get(version_url(1, "/card") + "&format=pdf")).status_code == 422


# ---------------------------------------------------------------------------- the real broker


@pytest.mark.integration
async def test_a_change_reaches_its_topic_on_the_real_broker(
    gateway_settings: GatewaySettings, admin_key: str, bus_settings: BusSettings, registry: Registry
) -> None:
    pair = PairKey.of(f"model_{uuid.uuid4().hex[:8]}", "credit_features", "3")
    await seed(registry, pair, "job-1")
    async with serving(create_app(gateway_settings, bus=bus_settings), admin_key) as http:
        answer = await http.patch(version_url(1, pair=pair), json={"status": "approved", "reason": "ok"})
        assert answer.status_code == 200

        async def first(action: str) -> Envelope:
            seen = await read_envelopes(
                bus_settings,
                topics.MODEL_VERSION_CHANGED,
                keep=lambda e: (
                    (e.payload.get("model_name"), e.payload.get("action")) == (pair.model_name, action)
                ),
                count=1,
                timeout_s=30,
            )
            assert seen, f"no {action} ModelVersionChanged on pf.model.version.changed within 30 s"
            return seen[0].envelope

        approved, registered = await first("status"), await first("registered")
    assert (registered.payload["actor"], registered.event_id) == ("registrar", expected_event_id(pair, 1, 0))
    payload = approved.payload
    assert (payload["action"], payload["to_status"], payload["reason"]) == ("status", "approved", "ok")
    assert approved.producer == "gateway" and approved.event_id == expected_event_id(pair, 1, 1)
